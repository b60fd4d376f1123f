//! An index over the fleet that makes the same choice as [`place`](crate::placement::place)
//! without looking at every node.
//!
//! Why this shape: the rule's score, `committed_after(demand)`, is never below the node's
//! committed fraction *now* (`committed_now`: adding a demand only raises each fraction). So
//! the index keeps the schedulable nodes ordered by `committed_now` and walks them from the
//! least committed up, stopping as soon as the next node's `committed_now` exceeds the best
//! score found: nothing beyond it can win, not even on the id tie-break. Nodes with the same
//! numbers (totals and committed cpu, memory and count) form one load class, scored once and
//! represented by its smallest id, so a uniform fleet (all empty, or all alike after a
//! round-robin burst) costs a few classes, not every node. Image affinity is a second ordered
//! map per image, walked first; only when no node holding the image has room does the walk over
//! all nodes run. The answer is exactly the linear scan's (same scores, same f64 arithmetic,
//! same tie-break), which a property test checks on random fleets.
//!
//! Sampling (power of k choices) was the other candidate: O(k) always, but it answers
//! differently from the rule (affinity and the least-committed choice become likely, not
//! certain), and bursts onto an empty fleet no longer spread deterministically.
//!
//! Cost: an update (heartbeat, allocation, release, status change) is a few B-tree operations
//! per map the node is in, O(log n) each. A decision walks the classes whose `committed_now`
//! lies within one demand's worth of the least committed one: a handful on a fleet with varied
//! load. The worst case is many *distinct* loads packed within one demand of the minimum, where
//! the walk covers them all: no worse than the scan, plus the tree walk.

use crate::placement::{explain, Demand, NoPlacement, NodeLoad};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// A node's numbers as the index keeps them: [`NodeLoad`] without the borrowed parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeState {
    /// Online and accepting new sandboxes.
    pub schedulable: bool,
    /// Cpu the node offers, millicores.
    pub total_cpu_millis: u64,
    /// Memory the node offers, MiB.
    pub total_memory_mb: u64,
    /// Containers the node may run at once.
    pub max_containers: u32,
    /// Cpu held by existing sandboxes, millicores.
    pub allocated_cpu_millis: u64,
    /// Memory held by existing sandboxes, MiB.
    pub allocated_memory_mb: u64,
    /// Existing sandboxes.
    pub running: u32,
    /// Cpu of placements in flight, millicores.
    pub in_flight_cpu_millis: u64,
    /// Memory of placements in flight, MiB.
    pub in_flight_memory_mb: u64,
    /// Placements in flight.
    pub in_flight: u32,
    /// Images the node holds.
    pub images: Vec<String>,
}

impl NodeState {
    /// The state of `load` (its images copied).
    pub fn of(load: &NodeLoad<'_>) -> Self {
        NodeState {
            schedulable: load.schedulable,
            total_cpu_millis: load.total_cpu_millis,
            total_memory_mb: load.total_memory_mb,
            max_containers: load.max_containers,
            allocated_cpu_millis: load.allocated_cpu_millis,
            allocated_memory_mb: load.allocated_memory_mb,
            running: load.running,
            in_flight_cpu_millis: load.in_flight_cpu_millis,
            in_flight_memory_mb: load.in_flight_memory_mb,
            in_flight: load.in_flight,
            images: load.images.to_vec(),
        }
    }

    fn load<'a>(&'a self, node_id: &'a str) -> NodeLoad<'a> {
        NodeLoad {
            node_id,
            schedulable: self.schedulable,
            total_cpu_millis: self.total_cpu_millis,
            total_memory_mb: self.total_memory_mb,
            max_containers: self.max_containers,
            allocated_cpu_millis: self.allocated_cpu_millis,
            allocated_memory_mb: self.allocated_memory_mb,
            running: self.running,
            in_flight_cpu_millis: self.in_flight_cpu_millis,
            in_flight_memory_mb: self.in_flight_memory_mb,
            in_flight: self.in_flight,
            images: &self.images,
        }
    }
}

/// A load class: `committed_now` as bits (non-negative f64s order like their bit patterns)
/// first, then every number placement reads (totals, then committed cpu, memory and count).
/// Nodes of one class get the same answer from `has_room_for` and `committed_after` for any
/// demand, so a walk scores a class once and takes its smallest id.
type Class = (u64, u64, u64, u32, u64, u64, u32);

/// Classes in walk order, each with its node ids (smallest first).
type Classes = BTreeMap<Class, BTreeSet<String>>;

fn class_of(n: &NodeLoad<'_>) -> Class {
    (
        n.committed_now().to_bits(),
        n.total_cpu_millis,
        n.total_memory_mb,
        n.max_containers,
        n.allocated_cpu_millis
            .saturating_add(n.in_flight_cpu_millis),
        n.allocated_memory_mb.saturating_add(n.in_flight_memory_mb),
        n.running.saturating_add(n.in_flight),
    )
}

/// A node of class `c` (only the numbers placement reads).
fn representative<'a>(c: &Class, node_id: &'a str) -> NodeLoad<'a> {
    NodeLoad {
        node_id,
        schedulable: true,
        total_cpu_millis: c.1,
        total_memory_mb: c.2,
        max_containers: c.3,
        allocated_cpu_millis: c.4,
        allocated_memory_mb: c.5,
        running: c.6,
        in_flight_cpu_millis: 0,
        in_flight_memory_mb: 0,
        in_flight: 0,
        images: &[],
    }
}

struct Slot {
    node_id: String,
    state: NodeState,
    /// The class it is filed under, when schedulable.
    class: Option<Class>,
}

/// The fleet, ordered for placement. See the module docs.
#[derive(Default)]
pub struct PlacementIndex {
    slots: Vec<Option<Slot>>,
    free: Vec<usize>,
    by_id: HashMap<String, usize>,
    /// Schedulable nodes by class.
    all: Classes,
    /// Schedulable nodes holding an image (normalised to carry a tag), by class.
    holders: HashMap<String, Classes>,
}

/// `image` with `:latest` added when it has no tag or digest, so that equal strings mean
/// [`same_image`](crate::placement::same_image).
fn normalise(image: &str) -> std::borrow::Cow<'_, str> {
    let last = image.rsplit('/').next().unwrap_or(image);
    if last.contains(':') || last.contains('@') {
        image.into()
    } else {
        format!("{image}:latest").into()
    }
}

impl PlacementIndex {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// Nodes in the index.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether the index has no node.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Adds `node_id` or replaces its state: call on registration, heartbeat, status change,
    /// reservation, allocation and release.
    pub fn upsert(&mut self, node_id: &str, state: NodeState) {
        let slot = match self.by_id.get(node_id) {
            Some(&i) => {
                self.unfile(i);
                i
            }
            None => {
                let i = self.free.pop().unwrap_or(self.slots.len());
                if i == self.slots.len() {
                    self.slots.push(None);
                }
                self.by_id.insert(node_id.to_string(), i);
                i
            }
        };
        self.slots[slot] = Some(Slot {
            node_id: node_id.to_string(),
            state,
            class: None,
        });
        self.file(slot);
    }

    /// Changes a node's state in place with `f` (for the counters that move on every
    /// placement); false when the node is unknown.
    pub fn update(&mut self, node_id: &str, f: impl FnOnce(&mut NodeState)) -> bool {
        let Some(&i) = self.by_id.get(node_id) else {
            return false;
        };
        self.unfile(i);
        if let Some(s) = self.slots[i].as_mut() {
            f(&mut s.state);
        }
        self.file(i);
        true
    }

    /// Forgets `node_id`; false when it was not there.
    pub fn remove(&mut self, node_id: &str) -> bool {
        let Some(i) = self.by_id.remove(node_id) else {
            return false;
        };
        self.unfile(i);
        self.slots[i] = None;
        self.free.push(i);
        true
    }

    /// A node's state.
    pub fn get(&self, node_id: &str) -> Option<&NodeState> {
        let i = *self.by_id.get(node_id)?;
        self.slots[i].as_ref().map(|s| &s.state)
    }

    /// Chooses the node for `demand`, by the rule of [`place`](crate::placement::place), and
    /// returns its id.
    pub fn place(&self, demand: &Demand<'_>) -> Result<&str, NoPlacement> {
        let image = normalise(demand.image);
        if let Some(set) = self.holders.get(image.as_ref()) {
            if let Some(id) = walk(set, demand) {
                return Ok(id);
            }
        }
        // No holder has room: every candidate left lacks the image, so only load decides.
        match walk(&self.all, demand) {
            Some(id) => Ok(id),
            None => {
                let loads: Vec<NodeLoad<'_>> = self
                    .slots
                    .iter()
                    .flatten()
                    .map(|s| s.state.load(&s.node_id))
                    .collect();
                Err(explain(&loads, demand))
            }
        }
    }

    fn file(&mut self, i: usize) {
        let Some(s) = self.slots[i].as_mut() else {
            return;
        };
        if !s.state.schedulable {
            s.class = None;
            return;
        }
        let class = class_of(&s.state.load(&s.node_id));
        s.class = Some(class);
        self.all.entry(class).or_default().insert(s.node_id.clone());
        for image in &s.state.images {
            self.holders
                .entry(normalise(image).into_owned())
                .or_default()
                .entry(class)
                .or_default()
                .insert(s.node_id.clone());
        }
    }

    fn unfile(&mut self, i: usize) {
        let Some(s) = self.slots[i].as_mut() else {
            return;
        };
        let Some(class) = s.class.take() else {
            return;
        };
        take_out(&mut self.all, &class, &s.node_id);
        for image in &s.state.images {
            let image = normalise(image);
            if let Some(set) = self.holders.get_mut(image.as_ref()) {
                take_out(set, &class, &s.node_id);
                if set.is_empty() {
                    self.holders.remove(image.as_ref());
                }
            }
        }
    }
}

fn take_out(classes: &mut Classes, class: &Class, node_id: &str) {
    if let Some(ids) = classes.get_mut(class) {
        ids.remove(node_id);
        if ids.is_empty() {
            classes.remove(class);
        }
    }
}

/// Branch and bound over `classes`, least committed first: the chosen node's id.
fn walk<'a>(classes: &'a Classes, demand: &Demand<'_>) -> Option<&'a str> {
    // (node id, score)
    let mut best: Option<(&str, f64)> = None;
    for (class, ids) in classes {
        if let Some((_, score)) = best {
            if f64::from_bits(class.0) > score {
                break;
            }
        }
        let Some(id) = ids.first() else {
            continue;
        };
        let n = representative(class, id);
        if !n.has_room_for(demand) {
            continue;
        }
        let score = n.committed_after(demand);
        let better = match best {
            None => true,
            Some((bid, b)) => score < b || (score == b && id.as_str() < bid),
        };
        if better {
            best = Some((id, score));
        }
    }
    best.map(|(id, _)| id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::placement::place;
    use rand::{Rng, SeedableRng};

    const IMAGES: [&str; 4] = ["img:1", "img", "img:latest", "other:2"];

    fn random_state(rng: &mut impl Rng) -> NodeState {
        // Small totals so that ties and full nodes are common.
        let total_cpu = rng.random_range(0..5) * 1000;
        let total_mem = rng.random_range(0..5) * 1024;
        NodeState {
            schedulable: rng.random_bool(0.8),
            total_cpu_millis: total_cpu,
            total_memory_mb: total_mem,
            max_containers: rng.random_range(0..6),
            allocated_cpu_millis: rng.random_range(0..=total_cpu / 500) * 500,
            allocated_memory_mb: rng.random_range(0..=total_mem / 512) * 512,
            running: rng.random_range(0..4),
            in_flight_cpu_millis: rng.random_range(0..3) * 250,
            in_flight_memory_mb: rng.random_range(0..3) * 256,
            in_flight: rng.random_range(0..2),
            images: IMAGES
                .iter()
                .filter(|_| rng.random_bool(0.3))
                .map(|s| s.to_string())
                .collect(),
        }
    }

    fn random_demand(rng: &mut impl Rng) -> Demand<'static> {
        Demand {
            cpu_millis: rng.random_range(0..5) * 250,
            memory_mb: rng.random_range(0..5) * 256,
            image: IMAGES[rng.random_range(0..IMAGES.len())],
        }
    }

    /// The index against the linear scan, on random fleets that change between decisions.
    #[test]
    fn agrees_with_the_linear_scan_on_random_fleets() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
        let mut decisions = 0;
        for _ in 0..300 {
            let n = rng.random_range(0..40);
            let ids: Vec<String> = (0..n).map(|i| format!("n{:02}", (i * 7) % 40)).collect();
            let mut states: Vec<NodeState> = (0..n).map(|_| random_state(&mut rng)).collect();
            let mut index = PlacementIndex::new();
            for (id, s) in ids.iter().zip(&states) {
                index.upsert(id, s.clone());
            }
            for _ in 0..20 {
                let d = random_demand(&mut rng);
                let loads: Vec<NodeLoad<'_>> =
                    ids.iter().zip(&states).map(|(id, s)| s.load(id)).collect();
                let want = place(&loads, &d).map(|i| ids[i].as_str());
                assert_eq!(index.place(&d), want, "demand {d:?}");
                decisions += 1;
                if let Ok(chosen) = want {
                    // Reserve on the chosen node, as the scheduler does.
                    let k = ids.iter().position(|i| i == chosen).unwrap();
                    states[k].in_flight += 1;
                    states[k].in_flight_cpu_millis += d.cpu_millis;
                    states[k].in_flight_memory_mb += d.memory_mb;
                    assert!(index.update(chosen, |s| {
                        s.in_flight += 1;
                        s.in_flight_cpu_millis += d.cpu_millis;
                        s.in_flight_memory_mb += d.memory_mb;
                    }));
                }
                if n > 0 {
                    // A heartbeat or status change somewhere else.
                    let k = rng.random_range(0..n as usize);
                    states[k] = random_state(&mut rng);
                    index.upsert(&ids[k], states[k].clone());
                }
            }
        }
        assert_eq!(decisions, 6000);
    }

    #[test]
    fn removed_and_drained_nodes_are_not_chosen() {
        let state = |cpu: u64| NodeState {
            schedulable: true,
            total_cpu_millis: 4000,
            total_memory_mb: 4096,
            max_containers: 10,
            allocated_cpu_millis: cpu,
            allocated_memory_mb: 0,
            running: 0,
            in_flight_cpu_millis: 0,
            in_flight_memory_mb: 0,
            in_flight: 0,
            images: vec!["img".into()],
        };
        let d = Demand {
            cpu_millis: 100,
            memory_mb: 64,
            image: "img:latest",
        };
        let mut index = PlacementIndex::new();
        index.upsert("a", state(0));
        index.upsert("b", state(1000));
        index.upsert("c", state(2000));
        assert_eq!(index.place(&d), Ok("a"));
        assert!(index.remove("a"));
        assert!(!index.remove("a"));
        assert_eq!(index.place(&d), Ok("b"));
        assert!(index.update("b", |s| s.schedulable = false));
        assert_eq!(index.place(&d), Ok("c"));
        assert!(index.update("c", |s| s.allocated_cpu_millis = 4000));
        assert_eq!(index.place(&d), Err(NoPlacement::Full { schedulable: 1 }));
        // The freed slot is reused and the holder set follows the new images.
        let mut fresh = state(3000);
        fresh.images.clear();
        index.upsert("d", fresh);
        assert_eq!(index.len(), 3);
        assert_eq!(index.place(&d), Ok("d"));
        assert!(index.get("d").is_some_and(|s| s.images.is_empty()));
    }
}
