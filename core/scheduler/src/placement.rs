//! Placement: which runtime node gets a new sandbox. Pure, in memory, no I/O, and no
//! allocation on success.
//!
//! The rule (SCHEDULER.md): keep the nodes that are schedulable (online, not draining or in
//! maintenance) and have room for the requested cpu, memory and one more container, counting
//! placements still in flight; prefer a node that already holds the template's image; among
//! those, the least committed (the highest of its cpu, memory and container-count fractions);
//! ties go to the smallest node id, so the same input always gives the same answer.

/// One node as placement sees it. Cpu is in millicores so comparisons are exact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeLoad<'a> {
    /// The node id; the final tie-breaker, so decisions are deterministic.
    pub node_id: &'a str,
    /// Online and accepting new sandboxes (not offline, draining or in maintenance).
    pub schedulable: bool,
    /// Cpu the node offers, millicores.
    pub total_cpu_millis: u64,
    /// Memory the node offers, MiB.
    pub total_memory_mb: u64,
    /// Containers the node may run at once.
    pub max_containers: u32,
    /// Cpu held by sandboxes that exist on the node, millicores.
    pub allocated_cpu_millis: u64,
    /// Memory held by sandboxes that exist on the node, MiB.
    pub allocated_memory_mb: u64,
    /// Sandboxes that exist on the node.
    pub running: u32,
    /// Cpu of placements decided but not yet created, millicores: counted so a burst of
    /// requests does not pile onto the node that looked emptiest before any of them landed.
    pub in_flight_cpu_millis: u64,
    /// Memory of placements in flight, MiB.
    pub in_flight_memory_mb: u64,
    /// Placements in flight.
    pub in_flight: u32,
    /// Images the node is known to hold (`repo:tag`), for affinity.
    pub images: &'a [String],
}

impl NodeLoad<'_> {
    // All sums saturate: a saturated sum is larger than any total, so an absurd demand finds
    // no room instead of wrapping around to a small number that fits (admission refuses such
    // demands earlier; this keeps placement sound on its own).
    fn committed_cpu(&self) -> u64 {
        self.allocated_cpu_millis
            .saturating_add(self.in_flight_cpu_millis)
    }

    fn committed_memory(&self) -> u64 {
        self.allocated_memory_mb
            .saturating_add(self.in_flight_memory_mb)
    }

    fn committed_count(&self) -> u32 {
        self.running.saturating_add(self.in_flight)
    }

    /// Whether the node can take `demand` on top of what it has committed. Overflowing sums
    /// mean no room.
    pub fn has_room_for(&self, demand: &Demand<'_>) -> bool {
        let fits = |used: u64, more: u64, total: u64| {
            used.checked_add(more).is_some_and(|sum| sum <= total)
        };
        fits(
            self.committed_cpu(),
            demand.cpu_millis,
            self.total_cpu_millis,
        ) && fits(
            self.committed_memory(),
            demand.memory_mb,
            self.total_memory_mb,
        ) && self.committed_count() < self.max_containers
    }

    /// The committed fraction now, before any demand: the highest of cpu, memory and count.
    /// Never more than [`committed_after`](Self::committed_after) for any demand, which is
    /// what lets [`PlacementIndex`](crate::placement_index::PlacementIndex) stop early.
    pub fn committed_now(&self) -> f64 {
        let cpu = frac(self.committed_cpu(), self.total_cpu_millis);
        let mem = frac(self.committed_memory(), self.total_memory_mb);
        let count = frac(
            u64::from(self.committed_count()),
            u64::from(self.max_containers),
        );
        cpu.max(mem).max(count)
    }

    /// Whether the node could take `demand` at all, were it empty.
    pub fn could_ever_fit(&self, demand: &Demand<'_>) -> bool {
        demand.cpu_millis <= self.total_cpu_millis
            && demand.memory_mb <= self.total_memory_mb
            && self.max_containers > 0
    }

    /// The committed fraction after adding `demand`: the highest of cpu, memory and count.
    pub fn committed_after(&self, demand: &Demand<'_>) -> f64 {
        let cpu = frac(
            self.committed_cpu().saturating_add(demand.cpu_millis),
            self.total_cpu_millis,
        );
        let mem = frac(
            self.committed_memory().saturating_add(demand.memory_mb),
            self.total_memory_mb,
        );
        let count = frac(
            u64::from(self.committed_count()) + 1,
            u64::from(self.max_containers),
        );
        cpu.max(mem).max(count)
    }

    /// Whether the node holds `image`. A name without a tag means `:latest`.
    pub fn holds(&self, image: &str) -> bool {
        self.images.iter().any(|i| same_image(i, image))
    }
}

/// `used / total`, with an empty total counting as full.
fn frac(used: u64, total: u64) -> f64 {
    if total == 0 {
        1.0
    } else {
        used as f64 / total as f64
    }
}

/// Compares image references, treating a missing tag as `:latest`. Cheap when they differ:
/// only a length difference of exactly `":latest"` needs a closer look.
pub fn same_image(a: &str, b: &str) -> bool {
    const LATEST: &str = ":latest";
    if a.len() == b.len() {
        return a == b;
    }
    let (short, long) = if a.len() < b.len() { (a, b) } else { (b, a) };
    if long.len() != short.len() + LATEST.len()
        || !long.ends_with(LATEST)
        || !long.starts_with(short)
    {
        return false;
    }
    // `short` must have no tag of its own (a ':' after the last '/' is a tag; one before it is
    // a registry port).
    let last = short.rsplit('/').next().unwrap_or(short);
    !last.contains(':') && !last.contains('@')
}

/// What a new sandbox needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Demand<'a> {
    /// Cpu, millicores.
    pub cpu_millis: u64,
    /// Memory, MiB.
    pub memory_mb: u64,
    /// The template's image, for affinity.
    pub image: &'a str,
}

/// Why no node was chosen. Each says what a caller can do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoPlacement {
    /// No node is registered at all.
    NoNodes,
    /// Nodes exist but none is online and accepting sandboxes.
    NoneSchedulable {
        /// How many nodes are registered.
        registered: usize,
    },
    /// The demand is larger than any schedulable node, even an empty one: retrying cannot help.
    TooLarge {
        /// The most cpu any schedulable node has, millicores.
        largest_cpu_millis: u64,
        /// The most memory any schedulable node has, MiB.
        largest_memory_mb: u64,
    },
    /// Every schedulable node that could hold it is full right now: retry later.
    Full {
        /// How many schedulable nodes were considered.
        schedulable: usize,
    },
}

/// Chooses the node for `demand`: its index in `nodes`. One pass over the nodes; a second one
/// only to explain a failure.
pub fn place(nodes: &[NodeLoad<'_>], demand: &Demand<'_>) -> Result<usize, NoPlacement> {
    // (index, holds image, committed after placing)
    let mut best: Option<(usize, bool, f64)> = None;
    for (i, n) in nodes.iter().enumerate() {
        if !n.schedulable || !n.has_room_for(demand) {
            continue;
        }
        let committed = n.committed_after(demand);
        let (holds, better) = match best {
            None => (n.holds(demand.image), true),
            Some((bi, bholds, bcommitted)) => {
                let lighter = committed < bcommitted
                    || (committed == bcommitted && n.node_id < nodes[bi].node_id);
                if bholds && !lighter {
                    // It cannot win even if it holds the image: skip the image check.
                    continue;
                }
                let holds = n.holds(demand.image);
                (holds, if holds != bholds { holds } else { lighter })
            }
        };
        if better {
            best = Some((i, holds, committed));
        }
    }
    match best {
        Some((i, _, _)) => Ok(i),
        None => Err(explain(nodes, demand)),
    }
}

/// Why nothing was placed.
pub(crate) fn explain(nodes: &[NodeLoad<'_>], demand: &Demand<'_>) -> NoPlacement {
    if nodes.is_empty() {
        return NoPlacement::NoNodes;
    }
    let schedulable: Vec<&NodeLoad<'_>> = nodes.iter().filter(|n| n.schedulable).collect();
    if schedulable.is_empty() {
        return NoPlacement::NoneSchedulable {
            registered: nodes.len(),
        };
    }
    if !schedulable.iter().any(|n| n.could_ever_fit(demand)) {
        return NoPlacement::TooLarge {
            largest_cpu_millis: schedulable
                .iter()
                .map(|n| n.total_cpu_millis)
                .max()
                .unwrap_or(0),
            largest_memory_mb: schedulable
                .iter()
                .map(|n| n.total_memory_mb)
                .max()
                .unwrap_or(0),
        };
    }
    NoPlacement::Full {
        schedulable: schedulable.len(),
    }
}

/// Cores as millicores, rounding up so a request is never under-counted.
pub fn cores_to_millis(cores: f64) -> u64 {
    if cores.is_finite() && cores > 0.0 {
        (cores * 1000.0).ceil() as u64
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NONE: &[String] = &[];

    fn node(id: &str, cpu: u64, mem: u64, max: u32) -> NodeLoad<'_> {
        NodeLoad {
            node_id: id,
            schedulable: true,
            total_cpu_millis: cpu,
            total_memory_mb: mem,
            max_containers: max,
            allocated_cpu_millis: 0,
            allocated_memory_mb: 0,
            running: 0,
            in_flight_cpu_millis: 0,
            in_flight_memory_mb: 0,
            in_flight: 0,
            images: NONE,
        }
    }

    fn demand(cpu: u64, mem: u64) -> Demand<'static> {
        Demand {
            cpu_millis: cpu,
            memory_mb: mem,
            image: "img:1",
        }
    }

    #[test]
    fn empty_and_unschedulable_clusters_say_why() {
        assert_eq!(place(&[], &demand(1, 1)), Err(NoPlacement::NoNodes));
        let mut a = node("a", 1000, 1024, 10);
        a.schedulable = false;
        assert_eq!(
            place(&[a], &demand(1, 1)),
            Err(NoPlacement::NoneSchedulable { registered: 1 })
        );
    }

    #[test]
    fn only_nodes_with_room_for_cpu_memory_and_count() {
        let mut cpu_full = node("a", 1000, 4096, 10);
        cpu_full.allocated_cpu_millis = 800;
        let mut mem_full = node("b", 4000, 1024, 10);
        mem_full.allocated_memory_mb = 900;
        let mut count_full = node("c", 4000, 4096, 2);
        count_full.running = 2;
        let roomy = node("d", 4000, 4096, 10);
        let nodes = [cpu_full, mem_full, count_full, roomy];
        assert_eq!(place(&nodes, &demand(500, 256)), Ok(3));
        assert_eq!(
            place(&nodes[..3], &demand(500, 256)),
            Err(NoPlacement::Full { schedulable: 3 })
        );
    }

    #[test]
    fn too_large_differs_from_full() {
        let nodes = [node("a", 2000, 2048, 10), node("b", 4000, 1024, 10)];
        assert_eq!(
            place(&nodes, &demand(8000, 512)),
            Err(NoPlacement::TooLarge {
                largest_cpu_millis: 4000,
                largest_memory_mb: 2048
            })
        );
    }

    #[test]
    fn image_affinity_beats_load() {
        let images = vec!["img:1".to_string()];
        let mut busy_with_image = node("a", 4000, 4096, 10);
        busy_with_image.allocated_cpu_millis = 3000;
        busy_with_image.images = &images;
        let idle_without = node("b", 4000, 4096, 10);
        assert_eq!(
            place(&[idle_without, busy_with_image], &demand(500, 256)),
            Ok(1)
        );
        // ...but not a node without room.
        busy_with_image.allocated_cpu_millis = 3900;
        assert_eq!(
            place(&[idle_without, busy_with_image], &demand(500, 256)),
            Ok(0)
        );
    }

    #[test]
    fn least_committed_wins_counting_in_flight() {
        let mut a = node("a", 4000, 4096, 10);
        a.allocated_cpu_millis = 1000;
        let mut b = node("b", 4000, 4096, 10);
        b.allocated_cpu_millis = 500;
        assert_eq!(place(&[a, b], &demand(100, 64)), Ok(1));
        // Two placements in flight on b make it more committed than a.
        b.in_flight_cpu_millis = 1000;
        b.in_flight = 2;
        assert_eq!(place(&[a, b], &demand(100, 64)), Ok(0));
    }

    #[test]
    fn a_burst_spreads_across_equal_nodes() {
        let mut nodes = [
            node("a", 4000, 4096, 100),
            node("b", 4000, 4096, 100),
            node("c", 4000, 4096, 100),
        ];
        let d = demand(250, 128);
        let mut chosen = Vec::new();
        for _ in 0..6 {
            let i = place(&nodes, &d).unwrap();
            nodes[i].in_flight += 1;
            nodes[i].in_flight_cpu_millis += d.cpu_millis;
            nodes[i].in_flight_memory_mb += d.memory_mb;
            chosen.push(nodes[i].node_id);
        }
        assert_eq!(chosen, ["a", "b", "c", "a", "b", "c"]);
    }

    #[test]
    fn overflowing_demands_find_no_room_instead_of_wrapping() {
        let mut a = node("a", 4000, 4096, 10);
        a.allocated_memory_mb = 256;
        a.allocated_cpu_millis = 100;
        // 256 + (2^64 - 1) wraps to 255, which would "fit" in 4096.
        assert!(!a.has_room_for(&demand(100, u64::MAX)));
        assert!(!a.has_room_for(&demand(u64::MAX, 64)));
        assert_eq!(
            place(&[a], &demand(100, u64::MAX)),
            Err(NoPlacement::TooLarge {
                largest_cpu_millis: 4000,
                largest_memory_mb: 4096
            })
        );
        assert_eq!(
            a.committed_after(&demand(100, u64::MAX)),
            u64::MAX as f64 / 4096.0
        );
    }

    #[test]
    fn ties_go_to_the_smallest_id_whatever_the_order() {
        let nodes = [node("b", 1000, 1024, 10), node("a", 1000, 1024, 10)];
        assert_eq!(place(&nodes, &demand(100, 64)), Ok(1));
    }

    #[test]
    fn images_compare_with_implicit_latest() {
        assert!(same_image("busybox", "busybox:latest"));
        assert!(same_image("busybox:latest", "busybox"));
        assert!(!same_image("busybox:1", "busybox"));
        assert!(!same_image(
            "localhost:5000/busybox",
            "localhost:5000/busybox:1"
        ));
        assert!(same_image(
            "localhost:5000/busybox",
            "localhost:5000/busybox:latest"
        ));
    }

    #[test]
    fn cores_round_up_to_millis() {
        assert_eq!(cores_to_millis(0.5), 500);
        assert_eq!(cores_to_millis(0.0001), 1);
        assert_eq!(cores_to_millis(-1.0), 0);
        assert_eq!(cores_to_millis(f64::NAN), 0);
    }
}
