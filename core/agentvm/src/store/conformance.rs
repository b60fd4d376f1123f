//! The conformance suite of [`Store`]: one function per promise of the trait, run against
//! every backend by [`store_conformance_tests!`].
//!
//! Every backend meets the same expectations; a backend that needs a different one means the
//! contract in `store.rs` is wrong, and it is fixed there. A new backend adds one line at the
//! bottom of this file (with `persistent` if it keeps data across a reopen).

use super::{
    MemoryStore, MessagePageRequest, RedbStore, Removed, ReplayEntry, Store, TokenRecord,
    SCHEMA_VERSION,
};
use crate::error::{ErrorKind, Result};
use crate::model::scheduler::{
    ExecStatus, Execution, Liveness, NodeStatus, Resources, RuntimeNode, Sandbox, SandboxStatus,
    Template, TemplateSpec, Webhook,
};
use crate::model::{ContainerRecord, Definition, ImageRecord, Message, SessionRecord};
use std::collections::BTreeMap;

/// Generates `mod $backend` with one `#[test]` per suite function, each on a fresh store
/// opened by `$open: Fn(&Path) -> impl Store` in its own temporary directory. With
/// `persistent`, also the tests that close the store and open the same directory again. With
/// `skip_if = $skip` (a `Fn() -> bool`), each test returns at once when `$skip()` says so
/// (for a backend that needs a server the environment may not provide).
macro_rules! store_conformance_tests {
    ($backend:ident, $open:expr) => {
        store_conformance_tests!(@module $backend, $open, [], || false);
    };
    ($backend:ident, $open:expr, persistent) => {
        store_conformance_tests!(
            @module $backend, $open, [records_survive_reopen, scheduler_tables_survive_reopen],
            || false
        );
    };
    ($backend:ident, $open:expr, persistent, skip_if = $skip:expr) => {
        store_conformance_tests!(
            @module $backend, $open, [records_survive_reopen, scheduler_tables_survive_reopen],
            $skip
        );
    };
    (@module $backend:ident, $open:expr, [$($reopen:ident),*], $skip:expr) => {
        mod $backend {
            #[allow(unused_imports)]
            use super::*;

            fn open(dir: &std::path::Path) -> impl $crate::store::Store {
                ($open)(dir)
            }

            fn skipped() -> bool {
                ($skip)()
            }

            store_conformance_tests!(@tests
                schema_version_is_current,
                container_create_is_idempotent,
                container_template_is_set_and_kept,
                containers_list_by_id,
                delete_container_cascades_to_everything_under_it,
                definitions_put_replace_get_list,
                create_image_stores_the_image_and_its_first_session,
                create_image_refuses_taken_ids_and_writes_nothing,
                create_image_refuses_records_that_do_not_match,
                images_list_by_container_oldest_first,
                update_image_replaces_and_refuses_missing_or_moved,
                delete_image_cascades_to_its_sessions_only,
                create_session_needs_its_image_and_a_new_id,
                sessions_list_by_image_oldest_first,
                update_session_replaces_and_refuses_missing_or_moved,
                delete_session_removes_its_messages_and_replay_only,
                append_message_numbers_from_zero_per_session,
                append_message_refuses_unknown_sessions,
                page_messages_forward_and_backward_cover_every_message_once,
                page_messages_stop_at_their_byte_budget,
                concurrent_appends_get_consecutive_seqs,
                read_replay_after_a_cursor_with_a_limit,
                append_replay_replaces_an_entry_with_the_same_cursor,
                max_replay_cursor_spans_topics,
                trim_replay_by_count_keeps_the_newest_per_topic,
                trim_replay_by_age_drops_older_entries,
                trimming_raises_each_topics_replay_floor,
                a_capped_append_keeps_the_newest_and_raises_the_floor,
                tokens_put_find_list_and_revoke,
                scheduler_instance_is_stable_and_shared,
                scheduler_nodes_put_get_list_delete,
                scheduler_heartbeats_touch_only_the_time_and_only_forward,
                scheduler_templates_put_get_list_delete,
                scheduler_webhooks_put_list_delete,
                scheduler_delete_sandbox_removes_its_executions,
                scheduler_executions_list_oldest_first_per_sandbox,
                scheduler_writes_from_many_threads_all_land_in_order,
                a_lone_member_holds_its_leases_and_writes_under_them
            );

            $(
                #[test]
                fn $reopen() {
                    if skipped() {
                        return;
                    }
                    let dir = tempfile::tempdir().unwrap();
                    $crate::store::conformance::$reopen(|| open(dir.path()));
                }
            )*
        }
    };
    (@tests $($test:ident),* $(,)?) => {
        $(
            #[test]
            fn $test() {
                if skipped() {
                    return;
                }
                let dir = tempfile::tempdir().unwrap();
                let store = open(dir.path());
                $crate::store::conformance::$test(&store);
            }
        )*
    };
}

store_conformance_tests!(memory, |_: &std::path::Path| MemoryStore::new());
store_conformance_tests!(
    redb_file,
    |dir: &std::path::Path| RedbStore::open(dir.join("agentvm.redb")).unwrap(),
    persistent
);
// Against a real server: AGENTVM_TEST_POSTGRES (scripts/setup-postgres.sh), a schema per test.
#[cfg(feature = "postgres")]
store_conformance_tests!(
    postgres,
    |dir: &std::path::Path| crate::store::postgres::testing::open(dir),
    persistent,
    skip_if = crate::store::postgres::testing::skipped
);

// ----- fixtures -----

/// The cluster member of the lease cases.
fn member(id: &str) -> crate::store::ClusterMember {
    crate::store::ClusterMember {
        id: id.into(),
        url: format!("http://{id}.invalid:8080"),
    }
}

fn image(
    container: &str,
    image_id: &str,
    session_id: &str,
    t: i64,
) -> (ImageRecord, SessionRecord) {
    (
        ImageRecord {
            image_id: image_id.into(),
            container_id: container.into(),
            session_id: session_id.into(),
            name: "n".into(),
            description: None,
            definition_name: None,
            definition: Definition::default(),
            created_at: t,
            updated_at: t,
        },
        session(container, image_id, session_id, t),
    )
}

fn session(container: &str, image_id: &str, session_id: &str, t: i64) -> SessionRecord {
    SessionRecord {
        session_id: session_id.into(),
        image_id: image_id.into(),
        container_id: container.into(),
        title: None,
        created_at: t,
        updated_at: t,
    }
}

fn message(id: &str) -> Message {
    Message::user(id.into(), format!("text of {id}").into(), 1)
}

fn replay(topic: &str, cursor: u64, timestamp: i64) -> ReplayEntry {
    ReplayEntry {
        topic: topic.into(),
        cursor,
        timestamp,
        json: format!("{{\"cursor\":{cursor}}}").into_bytes().into(),
    }
}

fn token(id: &str, hash: &str, created_at: i64) -> TokenRecord {
    TokenRecord {
        id: id.into(),
        hash: hash.into(),
        containers: Some(vec!["a".into()]),
        created_at,
        revoked_at: None,
    }
}

fn kind<T: std::fmt::Debug>(result: Result<T>) -> ErrorKind {
    result.unwrap_err().kind()
}

fn message_ids(store: &dyn Store, session_id: &str) -> Vec<String> {
    store
        .list_messages(session_id)
        .unwrap()
        .into_iter()
        .map(|m| m.id)
        .collect()
}

fn cursors(store: &dyn Store, topic: &str) -> Vec<u64> {
    store
        .read_replay(topic, 0, usize::MAX)
        .unwrap()
        .into_iter()
        .map(|e| e.cursor)
        .collect()
}

fn image_ids(images: Vec<ImageRecord>) -> Vec<String> {
    images.into_iter().map(|i| i.image_id).collect()
}

fn session_ids(sessions: Vec<SessionRecord>) -> Vec<String> {
    sessions.into_iter().map(|s| s.session_id).collect()
}

/// An image with a session, two messages and three replay entries, for cascade tests.
fn populated(store: &dyn Store, container: &str, image_id: &str, session_id: &str, t: i64) {
    let (i, s) = image(container, image_id, session_id, t);
    store.create_image(&i, &s).unwrap();
    store.append_message(session_id, &message("m0")).unwrap();
    store.append_message(session_id, &message("m1")).unwrap();
    store
        .append_replay(&[
            replay(session_id, 1, 1),
            replay(session_id, 2, 2),
            replay(session_id, 3, 3),
        ])
        .unwrap();
}

/// Asserts a session and everything under it is gone.
fn assert_session_gone(store: &dyn Store, session_id: &str) {
    assert!(
        store.get_session(session_id).unwrap().is_none(),
        "{session_id}"
    );
    assert!(
        store.list_messages(session_id).unwrap().is_empty(),
        "{session_id}"
    );
    assert_eq!(store.count_messages(session_id).unwrap(), 0, "{session_id}");
    assert!(cursors(store, session_id).is_empty(), "{session_id}");
}

/// Asserts a session populated by [`populated`] is whole.
fn assert_session_whole(store: &dyn Store, session_id: &str) {
    assert!(
        store.get_session(session_id).unwrap().is_some(),
        "{session_id}"
    );
    assert_eq!(message_ids(store, session_id), ["m0", "m1"], "{session_id}");
    assert_eq!(cursors(store, session_id), [1, 2, 3], "{session_id}");
}

// ----- schema -----

pub(super) fn schema_version_is_current(store: &dyn Store) {
    assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
}

// ----- containers -----

pub(super) fn container_create_is_idempotent(store: &dyn Store) {
    let (record, created) = store.create_container("a", None, 1).unwrap();
    assert!(created);
    let expected = ContainerRecord {
        container_id: "a".into(),
        created_at: 1,
        sandbox_template: None,
    };
    assert_eq!(record, expected);
    let (record, created) = store.create_container("a", None, 2).unwrap();
    assert!(!created);
    assert_eq!(record, expected, "the first creation time is kept");
    assert_eq!(store.get_container("a").unwrap(), Some(expected));
}

pub(super) fn container_template_is_set_and_kept(store: &dyn Store) {
    let (record, created) = store.create_container("a", Some("py"), 1).unwrap();
    assert!(created);
    assert_eq!(record.sandbox_template.as_deref(), Some("py"));
    let (record, _) = store.create_container("a", None, 2).unwrap();
    assert_eq!(
        record.sandbox_template.as_deref(),
        Some("py"),
        "kept without one"
    );
    let (record, created) = store.create_container("a", Some("node"), 3).unwrap();
    assert!(!created);
    assert_eq!(
        record.sandbox_template.as_deref(),
        Some("node"),
        "set on an existing one"
    );
    let stored = store.get_container("a").unwrap().unwrap();
    assert_eq!(stored.sandbox_template.as_deref(), Some("node"));
    assert_eq!(stored.created_at, 1);
}

pub(super) fn containers_list_by_id(store: &dyn Store) {
    assert!(store.list_containers().unwrap().is_empty());
    for id in ["b", "c", "a"] {
        store.create_container(id, None, 1).unwrap();
    }
    let ids: Vec<String> = store
        .list_containers()
        .unwrap()
        .into_iter()
        .map(|c| c.container_id)
        .collect();
    assert_eq!(ids, ["a", "b", "c"]);
    assert!(store.get_container("d").unwrap().is_none());
}

pub(super) fn delete_container_cascades_to_everything_under_it(store: &dyn Store) {
    populated(store, "a", "img_2", "sess_2", 1);
    populated(store, "a", "img_1", "sess_1", 2);
    store
        .create_session(&session("a", "img_1", "sess_3", 3))
        .unwrap();
    populated(store, "b", "img_3", "sess_4", 1);
    store.create_container("empty", None, 1).unwrap();

    let removed = store.delete_container("a").unwrap().unwrap();
    assert_eq!(
        removed,
        Removed {
            images: vec!["img_1".into(), "img_2".into()],
            sessions: vec!["sess_1".into(), "sess_3".into(), "sess_2".into()],
        },
        "images in id order, sessions image by image in id order"
    );
    assert!(store.get_container("a").unwrap().is_none());
    assert!(store.list_images("a").unwrap().is_empty());
    for image_id in ["img_1", "img_2"] {
        assert!(store.get_image(image_id).unwrap().is_none());
        assert!(store.list_sessions(image_id).unwrap().is_empty());
    }
    for session_id in ["sess_1", "sess_2", "sess_3"] {
        assert_session_gone(store, session_id);
    }
    // Another container is untouched.
    assert_eq!(image_ids(store.list_images("b").unwrap()), ["img_3"]);
    assert_session_whole(store, "sess_4");

    assert_eq!(
        store.delete_container("empty").unwrap(),
        Some(Removed::default())
    );
    assert!(store.delete_container("a").unwrap().is_none());
    let ids: Vec<String> = store
        .list_containers()
        .unwrap()
        .into_iter()
        .map(|c| c.container_id)
        .collect();
    assert_eq!(ids, ["b"]);
}

// ----- definitions -----

pub(super) fn definitions_put_replace_get_list(store: &dyn Store) {
    let mut b = Definition {
        name: "b".into(),
        system_prompt: Some("first".into()),
        ..Default::default()
    };
    let a = Definition {
        name: "a".into(),
        tools: vec!["bash".into()],
        mcp_servers: Some(
            serde_json::from_value(serde_json::json!({"s": {"command": "x"}})).unwrap(),
        ),
        ..Default::default()
    };
    assert!(!store.put_definition(&b).unwrap());
    assert!(!store.put_definition(&a).unwrap());
    b.system_prompt = Some("second".into());
    assert!(store.put_definition(&b).unwrap(), "replaced");
    assert_eq!(store.get_definition("b").unwrap(), Some(b.clone()));
    assert_eq!(store.get_definition("a").unwrap(), Some(a.clone()));
    assert_eq!(store.list_definitions().unwrap(), [a, b]);
    assert!(store.get_definition("c").unwrap().is_none());
}

// ----- images -----

pub(super) fn create_image_stores_the_image_and_its_first_session(store: &dyn Store) {
    let (i, s) = image("a", "img_1", "sess_1", 5);
    assert!(
        store.create_image(&i, &s).unwrap(),
        "the container is created"
    );
    assert_eq!(
        store.get_container("a").unwrap().map(|c| c.created_at),
        Some(5),
        "at the image's creation time"
    );
    assert_eq!(store.get_image("img_1").unwrap(), Some(i));
    assert_eq!(store.get_session("sess_1").unwrap(), Some(s.clone()));
    assert_eq!(store.list_sessions("img_1").unwrap(), [s]);
    assert_eq!(store.count_messages("sess_1").unwrap(), 0);

    store.create_container("b", Some("py"), 1).unwrap();
    let (i, s) = image("b", "img_2", "sess_2", 6);
    assert!(
        !store.create_image(&i, &s).unwrap(),
        "the container existed"
    );
    assert_eq!(
        store
            .get_container("b")
            .unwrap()
            .unwrap()
            .sandbox_template
            .as_deref(),
        Some("py"),
        "an existing container is kept as it was"
    );
}

pub(super) fn create_image_refuses_taken_ids_and_writes_nothing(store: &dyn Store) {
    let (i, s) = image("a", "img_1", "sess_1", 1);
    store.create_image(&i, &s).unwrap();

    let (i2, s2) = image("other", "img_1", "sess_2", 2);
    assert_eq!(kind(store.create_image(&i2, &s2)), ErrorKind::AlreadyExists);
    let (i3, s3) = image("other", "img_3", "sess_1", 2);
    assert_eq!(kind(store.create_image(&i3, &s3)), ErrorKind::AlreadyExists);

    assert!(store.get_container("other").unwrap().is_none());
    assert!(store.get_session("sess_2").unwrap().is_none());
    assert!(store.get_image("img_3").unwrap().is_none());
    assert_eq!(store.get_image("img_1").unwrap(), Some(i));
    assert_eq!(store.get_session("sess_1").unwrap(), Some(s));
    assert_eq!(store.list_containers().unwrap().len(), 1);
}

pub(super) fn create_image_refuses_records_that_do_not_match(store: &dyn Store) {
    let (i, mut s) = image("a", "img_1", "sess_1", 1);
    s.container_id = "b".into();
    assert_eq!(kind(store.create_image(&i, &s)), ErrorKind::InvalidInput);
    let (i, mut s) = image("a", "img_1", "sess_1", 1);
    s.image_id = "img_2".into();
    assert_eq!(kind(store.create_image(&i, &s)), ErrorKind::InvalidInput);
    let (mut i, s) = image("a", "img_1", "sess_1", 1);
    i.session_id = "sess_2".into();
    assert_eq!(kind(store.create_image(&i, &s)), ErrorKind::InvalidInput);
    assert!(store.list_containers().unwrap().is_empty());
    assert!(store.get_image("img_1").unwrap().is_none());
    assert!(store.get_session("sess_1").unwrap().is_none());
}

pub(super) fn images_list_by_container_oldest_first(store: &dyn Store) {
    for (id, t) in [("img_c", 3), ("img_b", 1), ("img_a", 2), ("img_0", 2)] {
        let (i, s) = image("a", id, &format!("sess_{id}"), t);
        store.create_image(&i, &s).unwrap();
    }
    let (i, s) = image("b", "img_x", "sess_x", 0);
    store.create_image(&i, &s).unwrap();
    assert_eq!(
        image_ids(store.list_images("a").unwrap()),
        ["img_b", "img_0", "img_a", "img_c"],
        "by creation time, then id"
    );
    assert_eq!(image_ids(store.list_images("b").unwrap()), ["img_x"]);
    assert!(store.list_images("c").unwrap().is_empty());
}

pub(super) fn update_image_replaces_and_refuses_missing_or_moved(store: &dyn Store) {
    let (mut i, s) = image("a", "img_1", "sess_1", 1);
    store.create_image(&i, &s).unwrap();
    i.name = "renamed".into();
    i.description = Some("d".into());
    i.updated_at = 9;
    store.update_image(&i).unwrap();
    assert_eq!(store.get_image("img_1").unwrap(), Some(i.clone()));
    assert_eq!(store.list_images("a").unwrap(), [i.clone()]);

    let (missing, _) = image("a", "img_2", "sess_2", 1);
    assert_eq!(kind(store.update_image(&missing)), ErrorKind::NotFound);
    assert!(store.get_image("img_2").unwrap().is_none(), "not created");

    let mut moved = i.clone();
    moved.container_id = "b".into();
    assert_eq!(kind(store.update_image(&moved)), ErrorKind::InvalidInput);
    let mut moved = i.clone();
    moved.session_id = "sess_9".into();
    assert_eq!(kind(store.update_image(&moved)), ErrorKind::InvalidInput);
    assert_eq!(store.get_image("img_1").unwrap(), Some(i));
}

pub(super) fn delete_image_cascades_to_its_sessions_only(store: &dyn Store) {
    populated(store, "a", "img_1", "sess_1", 1);
    populated(store, "a", "img_2", "sess_2", 2);
    store
        .create_session(&session("a", "img_1", "sess_0", 3))
        .unwrap();
    let stored = store.get_image("img_1").unwrap().unwrap();

    let (record, removed) = store.delete_image("img_1").unwrap().unwrap();
    assert_eq!(record, stored);
    assert_eq!(
        removed,
        Removed {
            images: vec!["img_1".into()],
            sessions: vec!["sess_0".into(), "sess_1".into()],
        }
    );
    assert!(store.get_image("img_1").unwrap().is_none());
    assert!(store.list_sessions("img_1").unwrap().is_empty());
    assert_session_gone(store, "sess_0");
    assert_session_gone(store, "sess_1");
    assert_eq!(image_ids(store.list_images("a").unwrap()), ["img_2"]);
    assert_session_whole(store, "sess_2");
    assert!(
        store.get_container("a").unwrap().is_some(),
        "the container stays"
    );
    assert!(store.delete_image("img_1").unwrap().is_none());
}

// ----- sessions -----

pub(super) fn create_session_needs_its_image_and_a_new_id(store: &dyn Store) {
    let (i, s) = image("a", "img_1", "sess_1", 1);
    store.create_image(&i, &s).unwrap();

    let orphan = session("a", "img_missing", "sess_2", 2);
    assert_eq!(kind(store.create_session(&orphan)), ErrorKind::NotFound);
    let elsewhere = session("b", "img_1", "sess_2", 2);
    assert_eq!(
        kind(store.create_session(&elsewhere)),
        ErrorKind::InvalidInput
    );
    let mut taken = session("a", "img_1", "sess_1", 2);
    taken.title = Some("replacement".into());
    assert_eq!(kind(store.create_session(&taken)), ErrorKind::AlreadyExists);
    assert!(store.get_session("sess_2").unwrap().is_none());
    assert_eq!(store.get_session("sess_1").unwrap(), Some(s.clone()));

    let second = session("a", "img_1", "sess_2", 2);
    store.create_session(&second).unwrap();
    assert_eq!(store.get_session("sess_2").unwrap(), Some(second.clone()));
    assert_eq!(store.list_sessions("img_1").unwrap(), [s, second]);
}

pub(super) fn sessions_list_by_image_oldest_first(store: &dyn Store) {
    let (i, s) = image("a", "img_1", "sess_m", 5);
    store.create_image(&i, &s).unwrap();
    let (i, s) = image("a", "img_2", "sess_other", 0);
    store.create_image(&i, &s).unwrap();
    for (id, t) in [("sess_z", 1), ("sess_b", 7), ("sess_a", 7)] {
        store.create_session(&session("a", "img_1", id, t)).unwrap();
    }
    assert_eq!(
        session_ids(store.list_sessions("img_1").unwrap()),
        ["sess_z", "sess_m", "sess_a", "sess_b"],
        "by creation time, then id"
    );
    assert_eq!(
        session_ids(store.list_sessions("img_2").unwrap()),
        ["sess_other"]
    );
    assert!(store.list_sessions("img_3").unwrap().is_empty());
}

pub(super) fn update_session_replaces_and_refuses_missing_or_moved(store: &dyn Store) {
    let (i, mut s) = image("a", "img_1", "sess_1", 1);
    store.create_image(&i, &s).unwrap();
    s.title = Some("title".into());
    s.updated_at = 9;
    store.update_session(&s).unwrap();
    assert_eq!(store.get_session("sess_1").unwrap(), Some(s.clone()));
    assert_eq!(store.list_sessions("img_1").unwrap(), [s.clone()]);

    let missing = session("a", "img_1", "sess_2", 1);
    assert_eq!(kind(store.update_session(&missing)), ErrorKind::NotFound);
    assert!(
        store.get_session("sess_2").unwrap().is_none(),
        "not created"
    );

    let mut moved = s.clone();
    moved.image_id = "img_2".into();
    assert_eq!(kind(store.update_session(&moved)), ErrorKind::InvalidInput);
    let mut moved = s.clone();
    moved.container_id = "b".into();
    assert_eq!(kind(store.update_session(&moved)), ErrorKind::InvalidInput);
    assert_eq!(store.get_session("sess_1").unwrap(), Some(s));
}

pub(super) fn delete_session_removes_its_messages_and_replay_only(store: &dyn Store) {
    populated(store, "a", "img_1", "sess_1", 1);
    let second = session("a", "img_1", "sess_2", 2);
    store.create_session(&second).unwrap();
    store.append_message("sess_2", &message("m0")).unwrap();
    store.append_message("sess_2", &message("m1")).unwrap();
    store
        .append_replay(&[
            replay("sess_2", 1, 1),
            replay("sess_2", 2, 2),
            replay("sess_2", 3, 3),
        ])
        .unwrap();

    assert_eq!(store.delete_session("sess_2").unwrap(), Some(second));
    assert_session_gone(store, "sess_2");
    assert_eq!(
        session_ids(store.list_sessions("img_1").unwrap()),
        ["sess_1"]
    );
    assert_session_whole(store, "sess_1");
    assert!(
        store.get_image("img_1").unwrap().is_some(),
        "the image stays"
    );
    assert!(store.delete_session("sess_2").unwrap().is_none());
    assert_eq!(
        kind(store.append_message("sess_2", &message("m2"))),
        ErrorKind::NotFound,
        "a deleted conversation is not resurrected"
    );
    assert!(store.list_messages("sess_2").unwrap().is_empty());
}

// ----- messages -----

pub(super) fn append_message_numbers_from_zero_per_session(store: &dyn Store) {
    let (i, s) = image("a", "img_1", "sess_1", 1);
    store.create_image(&i, &s).unwrap();
    store
        .create_session(&session("a", "img_1", "sess_2", 2))
        .unwrap();
    let mut written = Vec::new();
    for n in 0..5u64 {
        let m = message(&format!("m{n}"));
        assert_eq!(store.append_message("sess_1", &m).unwrap(), n);
        written.push(m);
        if n < 2 {
            let other = message(&format!("other{n}"));
            assert_eq!(
                store.append_message("sess_2", &other).unwrap(),
                n,
                "per session"
            );
        }
    }
    assert_eq!(
        store.list_messages("sess_1").unwrap(),
        written,
        "as written, in order"
    );
    assert_eq!(store.count_messages("sess_1").unwrap(), 5);
    assert_eq!(message_ids(store, "sess_2"), ["other0", "other1"]);
    assert_eq!(store.count_messages("sess_2").unwrap(), 2);
}

pub(super) fn append_message_refuses_unknown_sessions(store: &dyn Store) {
    let e = store.append_message("nope", &message("m")).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert_eq!(e.to_string(), "Session not found: nope");
    assert!(store.list_messages("nope").unwrap().is_empty());
    assert_eq!(store.count_messages("nope").unwrap(), 0);
}

/// Pages `session_id` in `limit`s, forward or backward, following `next` cursors; returns the
/// ids in reading order and the seqs seen.
fn read_all_pages(
    store: &dyn Store,
    session_id: &str,
    limit: usize,
    backward: bool,
) -> Vec<String> {
    let mut ids = Vec::new();
    let mut cursor = None;
    loop {
        let request = MessagePageRequest {
            after: if backward { None } else { cursor },
            before: if backward {
                Some(cursor.unwrap_or(u64::MAX))
            } else {
                None
            },
            limit,
            max_bytes: usize::MAX,
        };
        let page = store.page_messages(session_id, &request).unwrap();
        assert!(page.messages.len() <= limit);
        let seqs: Vec<u64> = page.messages.iter().map(|(s, _)| *s).collect();
        assert!(
            seqs.windows(2).all(|w| w[0] + 1 == w[1]),
            "oldest first: {seqs:?}"
        );
        let mut batch: Vec<String> = page.messages.iter().map(|(_, m)| m.id.clone()).collect();
        if backward {
            batch.reverse();
        }
        ids.extend(batch);
        if !page.has_more {
            return ids;
        }
        cursor = Some(if backward {
            seqs[0]
        } else {
            seqs[seqs.len() - 1]
        });
    }
}

pub(super) fn page_messages_forward_and_backward_cover_every_message_once(store: &dyn Store) {
    let (i, s) = image("a", "img_1", "sess_1", 1);
    store.create_image(&i, &s).unwrap();
    let written: Vec<String> = (0..23).map(|n| format!("m{n}")).collect();
    for id in &written {
        store.append_message("sess_1", &message(id)).unwrap();
    }
    for limit in [1, 5, 23, 100] {
        assert_eq!(
            read_all_pages(store, "sess_1", limit, false),
            written,
            "forward by {limit}"
        );
        let mut back = read_all_pages(store, "sess_1", limit, true);
        back.reverse();
        assert_eq!(back, written, "backward by {limit}");
    }
    // A range: after 4, before 9 is 5..=8; a page at the end has nothing more.
    let page = store
        .page_messages(
            "sess_1",
            &MessagePageRequest {
                after: Some(4),
                before: Some(9),
                limit: 10,
                max_bytes: usize::MAX,
            },
        )
        .unwrap();
    let seqs: Vec<u64> = page.messages.iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs, [5, 6, 7, 8]);
    assert!(!page.has_more);
    let last = MessagePageRequest {
        after: Some(22),
        before: None,
        limit: 10,
        max_bytes: 1,
    };
    let page = store.page_messages("sess_1", &last).unwrap();
    assert!(page.messages.is_empty() && !page.has_more);
    assert!(store
        .page_messages("nope", &last)
        .unwrap()
        .messages
        .is_empty());
}

pub(super) fn page_messages_stop_at_their_byte_budget(store: &dyn Store) {
    let (i, s) = image("a", "img_1", "sess_1", 1);
    store.create_image(&i, &s).unwrap();
    let big = "x".repeat(10_000);
    for n in 0..20 {
        let m = Message::user(format!("m{n}"), big.as_str().into(), n);
        store.append_message("sess_1", &m).unwrap();
    }
    let request = MessagePageRequest {
        after: None,
        before: None,
        limit: 100,
        max_bytes: 35_000,
    };
    let page = store.page_messages("sess_1", &request).unwrap();
    // Stops once the budget is reached: four messages of ~10 KB, and more are left.
    assert_eq!(page.messages.len(), 4);
    assert!(page.has_more);
    // A single message over the budget still comes back, one per page.
    let tiny = MessagePageRequest {
        max_bytes: 1,
        before: Some(20),
        after: None,
        limit: 100,
    };
    let page = store.page_messages("sess_1", &tiny).unwrap();
    assert_eq!(page.messages.len(), 1);
    assert_eq!(page.messages[0].0, 19);
    assert!(page.has_more);
}

pub(super) fn concurrent_appends_get_consecutive_seqs(store: &dyn Store) {
    let (i, s) = image("a", "img_1", "sess_1", 1);
    store.create_image(&i, &s).unwrap();
    const THREADS: usize = 4;
    const EACH: usize = 8;
    let mut seqs: Vec<(u64, String)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                scope.spawn(move || {
                    (0..EACH)
                        .map(|n| {
                            let id = format!("t{t}-{n}");
                            (store.append_message("sess_1", &message(&id)).unwrap(), id)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    seqs.sort();
    let numbers: Vec<u64> = seqs.iter().map(|(seq, _)| *seq).collect();
    assert_eq!(numbers, (0..(THREADS * EACH) as u64).collect::<Vec<_>>());
    let by_seq: Vec<String> = seqs.into_iter().map(|(_, id)| id).collect();
    assert_eq!(
        message_ids(store, "sess_1"),
        by_seq,
        "listed in sequence order"
    );
}

// ----- replay log -----

pub(super) fn read_replay_after_a_cursor_with_a_limit(store: &dyn Store) {
    let t: Vec<ReplayEntry> = (1..=10).map(|c| replay("t", c, c as i64)).collect();
    store.append_replay(&t).unwrap();
    store
        .append_replay(&[replay("u", 4, 4), replay("u", 11, 11)])
        .unwrap();
    store.append_replay(&[]).unwrap();

    assert_eq!(
        store.read_replay("t", 0, 100).unwrap(),
        t,
        "entries as written"
    );
    assert_eq!(store.read_replay("t", 7, 100).unwrap(), t[7..].to_vec());
    assert_eq!(store.read_replay("t", 7, 2).unwrap(), t[7..9].to_vec());
    assert!(store.read_replay("t", 7, 0).unwrap().is_empty());
    assert!(store.read_replay("t", 10, 100).unwrap().is_empty());
    assert!(store.read_replay("t", u64::MAX, 100).unwrap().is_empty());
    assert_eq!(cursors(store, "u"), [4, 11]);
    assert!(store.read_replay("v", 0, 100).unwrap().is_empty());
}

pub(super) fn append_replay_replaces_an_entry_with_the_same_cursor(store: &dyn Store) {
    store
        .append_replay(&[replay("t", 1, 1), replay("t", 2, 2)])
        .unwrap();
    let mut again = replay("t", 2, 5);
    again.json = b"{\"again\":true}".as_slice().into();
    store.append_replay(&[again.clone()]).unwrap();
    assert_eq!(store.read_replay("t", 1, 10).unwrap(), [again]);
}

pub(super) fn max_replay_cursor_spans_topics(store: &dyn Store) {
    assert_eq!(store.max_replay_cursor().unwrap(), 0);
    store
        .append_replay(&[replay("b", 3, 1), replay("b", 40, 1)])
        .unwrap();
    store
        .append_replay(&[replay("a", 7, 1), replay("c", 12, 1)])
        .unwrap();
    assert_eq!(store.max_replay_cursor().unwrap(), 40);
}

pub(super) fn trim_replay_by_count_keeps_the_newest_per_topic(store: &dyn Store) {
    let t: Vec<ReplayEntry> = (1..=10).map(|c| replay("t", c, 100)).collect();
    store.append_replay(&t).unwrap();
    store
        .append_replay(&[
            replay("u", 20, 100),
            replay("u", 21, 100),
            replay("u", 22, 100),
        ])
        .unwrap();
    assert_eq!(store.trim_replay(4, 0).unwrap(), 6);
    assert_eq!(cursors(store, "t"), [7, 8, 9, 10]);
    assert_eq!(cursors(store, "u"), [20, 21, 22]);
    assert_eq!(store.trim_replay(4, 0).unwrap(), 0, "nothing more to trim");
    assert_eq!(store.trim_replay(0, 0).unwrap(), 7, "keep none");
    assert_eq!(store.max_replay_cursor().unwrap(), 0);
}

pub(super) fn trim_replay_by_age_drops_older_entries(store: &dyn Store) {
    let t: Vec<ReplayEntry> = (1..=10).map(|c| replay("t", c, c as i64)).collect();
    store.append_replay(&t).unwrap();
    store
        .append_replay(&[replay("u", 11, 2), replay("u", 12, 8)])
        .unwrap();
    assert_eq!(store.trim_replay(usize::MAX, 4).unwrap(), 4);
    assert_eq!(cursors(store, "t"), [4, 5, 6, 7, 8, 9, 10]);
    assert_eq!(cursors(store, "u"), [12]);
    // Both at once: the newest 5, and none older than 7.
    assert_eq!(store.trim_replay(5, 7).unwrap(), 3);
    assert_eq!(cursors(store, "t"), [7, 8, 9, 10]);
    assert_eq!(cursors(store, "u"), [12]);
}

pub(super) fn trimming_raises_each_topics_replay_floor(store: &dyn Store) {
    assert_eq!(store.replay_floor("t").unwrap(), 0, "nothing trimmed yet");
    let t: Vec<ReplayEntry> = (1..=10).map(|c| replay("t", c, 100)).collect();
    store.append_replay(&t).unwrap();
    store
        .append_replay(&[replay("u", 20, 100), replay("u", 21, 100)])
        .unwrap();
    assert_eq!(store.trim_replay(4, 0).unwrap(), 6);
    assert_eq!(
        store.replay_floor("t").unwrap(),
        6,
        "cursors 1..=6 are gone"
    );
    assert_eq!(store.replay_floor("u").unwrap(), 0, "u kept everything");
    assert_eq!(store.trim_replay(1, 0).unwrap(), 4);
    assert_eq!(store.replay_floor("t").unwrap(), 9);
    assert_eq!(store.replay_floor("u").unwrap(), 20);
    assert_eq!(store.trim_replay(1, 0).unwrap(), 0);
    assert_eq!(
        store.replay_floor("t").unwrap(),
        9,
        "a no-op trim keeps the floor"
    );
    assert_eq!(store.replay_floor("nope").unwrap(), 0);
}

/// A capped append keeps at least the newest `keep` of each topic; whatever a store drops at
/// once is older than what it keeps and is behind the topic's floor, and `trim_replay` then
/// leaves every store in the same state.
pub(super) fn a_capped_append_keeps_the_newest_and_raises_the_floor(store: &dyn Store) {
    let t: Vec<ReplayEntry> = (1..=6).map(|c| replay("t", c, 100)).collect();
    store.append_replay_capped(&t, 4).unwrap();
    store
        .append_replay_capped(&[replay("t", 7, 100), replay("u", 30, 100)], 4)
        .unwrap();
    for (topic, newest) in [("t", vec![4, 5, 6, 7]), ("u", vec![30])] {
        let kept = cursors(store, topic);
        assert!(kept.ends_with(&newest), "{topic}: {kept:?}");
        let floor = store.replay_floor(topic).unwrap();
        let first = kept.first().copied().unwrap_or(u64::MAX);
        assert!(floor < first, "{topic}: floor {floor} hides {first}");
        if topic == "t" && kept.len() < 7 {
            assert_eq!(floor, first - 1, "what was dropped is behind the floor");
        }
    }
    if store.is_in_memory() {
        assert_eq!(cursors(store, "t"), [4, 5, 6, 7], "held to its cap");
        assert_eq!(store.replay_floor("t").unwrap(), 3);
    }
    store.trim_replay(4, 0).unwrap();
    assert_eq!(cursors(store, "t"), [4, 5, 6, 7]);
    assert_eq!(store.replay_floor("t").unwrap(), 3);
    assert_eq!(store.replay_floor("u").unwrap(), 0, "u kept everything");
}

// ----- tokens -----

pub(super) fn tokens_put_find_list_and_revoke(store: &dyn Store) {
    assert!(store.list_tokens().unwrap().is_empty());
    let late = token("tok_a", "hash_a", 2);
    let mut early = token("tok_b", "hash_b", 1);
    early.containers = None;
    store.put_token(&late).unwrap();
    store.put_token(&early).unwrap();
    assert_eq!(store.token_by_hash("hash_a").unwrap(), Some(late.clone()));
    assert!(
        store.token_by_hash("tok_a").unwrap().is_none(),
        "found by hash, not id"
    );
    assert_eq!(store.list_tokens().unwrap(), [early.clone(), late.clone()]);

    assert!(store.revoke_token("tok_a", 10).unwrap());
    assert_eq!(
        store.token_by_hash("hash_a").unwrap().unwrap().revoked_at,
        Some(10)
    );
    assert!(
        store.revoke_token("tok_a", 11).unwrap(),
        "revoking again is fine"
    );
    assert_eq!(
        store.token_by_hash("hash_a").unwrap().unwrap().revoked_at,
        Some(10),
        "the first revocation time is kept"
    );
    assert!(!store.revoke_token("tok_unknown", 12).unwrap());
    assert!(store
        .token_by_hash("hash_b")
        .unwrap()
        .unwrap()
        .revoked_at
        .is_none());

    let mut replaced = early.clone();
    replaced.containers = Some(vec!["c".into()]);
    store.put_token(&replaced).unwrap();
    assert_eq!(store.token_by_hash("hash_b").unwrap(), Some(replaced));
    assert_eq!(store.list_tokens().unwrap().len(), 2);
}

// ----- the scheduler's tables -----

fn node(id: &str) -> RuntimeNode {
    RuntimeNode {
        node_id: id.into(),
        hostname: "host".into(),
        runtime_type: "docker".into(),
        ip_address: None,
        api_endpoint: "unix:///var/run/docker.sock".into(),
        tls: None,
        status: NodeStatus::Online,
        admin_status: NodeStatus::Online,
        status_message: None,
        total_cpu_cores: 4.0,
        total_memory_mb: 8192,
        allocated_cpu_cores: 0.5,
        allocated_memory_mb: 512,
        running_containers: 1,
        in_flight: 0,
        max_containers: 100,
        cached_images: vec!["python:3.12".into()],
        labels: BTreeMap::from([("zone".into(), "a".into())]),
        liveness: Liveness::Probe,
        last_heartbeat_at: Some(5),
        registered_at: 1,
    }
}

fn template(id: &str) -> Template {
    Template {
        id: id.into(),
        spec: TemplateSpec::new(format!("{id} template"), "python:3.12"),
        created_at: 1,
        updated_at: 1,
    }
}

pub(crate) fn sandbox(id: &str) -> Sandbox {
    Sandbox {
        id: id.into(),
        template_id: "py".into(),
        docker_image: "python:3.12".into(),
        node_id: "n1".into(),
        docker_container_id: Some("c0ffee".into()),
        docker_container_name: format!("agentvm-{id}"),
        status: SandboxStatus::Running,
        resources: Resources {
            cpu_cores: 1.0,
            memory_mb: 256,
            disk_mb: None,
            pids_limit: 64,
        },
        env: BTreeMap::new(),
        user: "1000:1000".into(),
        uid_gid: Some((1000, 1000)),
        workdir: "/work".into(),
        network: "none".into(),
        read_only_root: true,
        owner: Some("a".into()),
        warm: false,
        lifetime_s: 60,
        idle_timeout_s: Some(10),
        idle_action: Default::default(),
        expires_at: 60_000,
        paused_at: None,
        resumed_at: None,
        created_at: 0,
        ready_at: Some(1),
        last_activity_at: 1,
        executor_url: None,
        termination: None,
    }
}

fn execution(id: &str, sandbox_id: &str, created_at: i64) -> Execution {
    Execution {
        id: id.into(),
        sandbox_id: sandbox_id.into(),
        command: vec!["echo".into(), id.into()],
        language: None,
        status: ExecStatus::Completed,
        stdout: format!("{id}\n"),
        stderr: String::new(),
        truncated: false,
        exit_code: Some(0),
        error: None,
        created_at,
        finished_at: Some(created_at + 1),
        duration_ms: Some(1),
    }
}

pub(super) fn scheduler_instance_is_stable_and_shared(store: &dyn Store) {
    let first = store.scheduler_store().unwrap();
    let id = first.scheduler_instance().unwrap();
    assert!(id.starts_with("sched"), "{id}");
    assert_eq!(
        first.scheduler_instance().unwrap(),
        id,
        "stable across calls"
    );
    let second = store.scheduler_store().unwrap();
    assert_eq!(
        second.scheduler_instance().unwrap(),
        id,
        "and across handles"
    );
    first.put_node(&node("n1")).unwrap();
    assert_eq!(
        second.get_node("n1").unwrap(),
        Some(node("n1")),
        "one set of tables"
    );
}

pub(super) fn scheduler_nodes_put_get_list_delete(store: &dyn Store) {
    let sched = store.scheduler_store().unwrap();
    assert!(sched.list_nodes().unwrap().is_empty());
    sched.put_node(&node("n2")).unwrap();
    sched.put_node(&node("n1")).unwrap();
    let mut changed = node("n1");
    changed.status = NodeStatus::Draining;
    sched.put_node(&changed).unwrap();
    assert_eq!(sched.get_node("n1").unwrap(), Some(changed.clone()));
    assert_eq!(sched.list_nodes().unwrap(), [changed, node("n2")]);
    assert!(sched.delete_node("n1").unwrap());
    assert!(!sched.delete_node("n1").unwrap());
    assert!(sched.get_node("n1").unwrap().is_none());
    assert_eq!(sched.list_nodes().unwrap(), [node("n2")]);
}

pub(super) fn scheduler_heartbeats_touch_only_the_time_and_only_forward(store: &dyn Store) {
    let sched = store.scheduler_store().unwrap();
    let mut drained = node("n1");
    drained.admin_status = NodeStatus::Draining;
    drained.last_heartbeat_at = Some(100);
    sched.put_node(&drained).unwrap();
    sched.put_node(&node("n2")).unwrap();
    sched
        .touch_nodes(&[("n1".into(), 200), ("gone".into(), 5), ("n2".into(), 7)])
        .unwrap();
    let mut want = drained.clone();
    want.last_heartbeat_at = Some(200);
    assert_eq!(sched.get_node("n1").unwrap(), Some(want.clone()));
    let mut n2 = node("n2");
    n2.last_heartbeat_at = Some(7);
    assert_eq!(sched.get_node("n2").unwrap(), Some(n2));
    assert!(sched.get_node("gone").unwrap().is_none());
    // Never back.
    sched.touch_nodes(&[("n1".into(), 150)]).unwrap();
    assert_eq!(sched.get_node("n1").unwrap(), Some(want));
    sched.touch_nodes(&[]).unwrap();
}

pub(super) fn scheduler_templates_put_get_list_delete(store: &dyn Store) {
    let sched = store.scheduler_store().unwrap();
    assert!(sched.list_templates().unwrap().is_empty());
    sched.put_template(&template("py")).unwrap();
    sched.put_template(&template("node")).unwrap();
    let mut changed = template("py");
    changed.spec.warm_pool_size = 2;
    // Credentials are stored as the scheduler sealed them, and come back unchanged.
    changed.spec.credentials = vec![crate::scheduler::Credential {
        host: "api.example.com".into(),
        header: "Authorization".into(),
        value: "sealed:v1:bm9uY2UtYW5kLWNpcGhlcnRleHQ=".into(),
    }];
    changed.updated_at = 2;
    sched.put_template(&changed).unwrap();
    assert_eq!(sched.get_template("py").unwrap(), Some(changed.clone()));
    assert_eq!(sched.list_templates().unwrap(), [template("node"), changed]);
    assert!(sched.delete_template("node").unwrap());
    assert!(!sched.delete_template("node").unwrap());
    assert!(sched.get_template("node").unwrap().is_none());
}

pub(super) fn scheduler_webhooks_put_list_delete(store: &dyn Store) {
    let sched = store.scheduler_store().unwrap();
    let hook = |id: &str, template: Option<&str>| Webhook {
        id: id.into(),
        url: format!("http://127.0.0.1:9/{id}"),
        template_id: template.map(str::to_string),
        events: vec!["sandbox_paused".into()],
        secret: "0123456789abcdef-secret".into(),
        created_at: 1,
    };
    assert!(sched.list_webhooks().unwrap().is_empty());
    sched.put_webhook(&hook("whk_b", None)).unwrap();
    sched.put_webhook(&hook("whk_a", Some("py"))).unwrap();
    let mut changed = hook("whk_b", None);
    changed.events.clear();
    sched.put_webhook(&changed).unwrap();
    assert_eq!(
        sched.list_webhooks().unwrap(),
        [hook("whk_a", Some("py")), changed],
        "by id, secrets kept, the replaced one as replaced"
    );
    assert!(sched.delete_webhook("whk_a").unwrap());
    assert!(!sched.delete_webhook("whk_a").unwrap());
    assert_eq!(sched.list_webhooks().unwrap().len(), 1);
}

pub(super) fn scheduler_delete_sandbox_removes_its_executions(store: &dyn Store) {
    let sched = store.scheduler_store().unwrap();
    sched.put_sandbox(&sandbox("sbx_2")).unwrap();
    sched.put_sandbox(&sandbox("sbx_1")).unwrap();
    let mut changed = sandbox("sbx_1");
    changed.status = SandboxStatus::Terminated;
    sched.put_sandbox(&changed).unwrap();
    assert_eq!(sched.get_sandbox("sbx_1").unwrap(), Some(changed.clone()));
    assert_eq!(sched.list_sandboxes().unwrap(), [changed, sandbox("sbx_2")]);
    sched
        .put_execution(&execution("exec_1", "sbx_1", 1))
        .unwrap();
    sched
        .put_execution(&execution("exec_2", "sbx_1", 2))
        .unwrap();
    sched
        .put_execution(&execution("exec_3", "sbx_2", 3))
        .unwrap();

    assert!(sched.delete_sandbox("sbx_1").unwrap());
    assert!(sched.get_sandbox("sbx_1").unwrap().is_none());
    assert!(sched.get_execution("exec_1").unwrap().is_none());
    assert!(sched.get_execution("exec_2").unwrap().is_none());
    assert!(sched.list_executions("sbx_1").unwrap().is_empty());
    assert_eq!(
        sched.list_executions("sbx_2").unwrap(),
        [execution("exec_3", "sbx_2", 3)],
        "another sandbox keeps its executions"
    );
    assert!(!sched.delete_sandbox("sbx_1").unwrap());
    assert_eq!(sched.list_sandboxes().unwrap(), [sandbox("sbx_2")]);
}

/// Sandbox and execution writes from many threads at once (which a store may commit together)
/// all land, each thread's in the order it made them.
pub(super) fn scheduler_writes_from_many_threads_all_land_in_order(store: &dyn Store) {
    const THREADS: i64 = 8;
    const EACH: i64 = 25;
    let sched = store.scheduler_store().unwrap();
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let sched = sched.clone();
            s.spawn(move || {
                for i in 0..EACH {
                    let id = format!("sbx_{t}_{i}");
                    let mut record = sandbox(&id);
                    sched.put_sandbox(&record).unwrap();
                    sched
                        .put_execution(&execution(&format!("exec_{t}_{i}"), &id, i))
                        .unwrap();
                    record.status = SandboxStatus::Terminated;
                    sched.put_sandbox(&record).unwrap();
                    if i % 5 == 0 {
                        assert!(sched.delete_sandbox(&id).unwrap(), "{id} was there");
                    }
                }
            });
        }
    });
    let all = sched.list_sandboxes().unwrap();
    assert_eq!(all.len() as i64, THREADS * (EACH - EACH / 5));
    assert!(
        all.iter().all(|s| s.status == SandboxStatus::Terminated),
        "the later write of a record is the one kept"
    );
    for t in 0..THREADS {
        for i in 0..EACH {
            let id = format!("sbx_{t}_{i}");
            let executions = sched.list_executions(&id).unwrap();
            if i % 5 == 0 {
                assert!(sched.get_sandbox(&id).unwrap().is_none(), "{id} deleted");
                assert!(executions.is_empty(), "{id}'s executions deleted with it");
            } else {
                assert_eq!(executions, [execution(&format!("exec_{t}_{i}"), &id, i)]);
            }
        }
    }
}

pub(super) fn scheduler_executions_list_oldest_first_per_sandbox(store: &dyn Store) {
    let sched = store.scheduler_store().unwrap();
    sched.put_sandbox(&sandbox("sbx_1")).unwrap();
    for (id, t) in [("exec_c", 1), ("exec_a", 3), ("exec_b", 2), ("exec_0", 2)] {
        sched.put_execution(&execution(id, "sbx_1", t)).unwrap();
    }
    sched
        .put_execution(&execution("exec_x", "sbx_2", 0))
        .unwrap();
    let mut finished = execution("exec_a", "sbx_1", 3);
    finished.status = ExecStatus::Failed;
    finished.exit_code = Some(1);
    sched.put_execution(&finished).unwrap();
    assert_eq!(sched.get_execution("exec_a").unwrap(), Some(finished));
    let ids: Vec<String> = sched
        .list_executions("sbx_1")
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(
        ids,
        ["exec_c", "exec_0", "exec_b", "exec_a"],
        "by creation, then id"
    );
    assert!(sched.list_executions("sbx_9").unwrap().is_empty());
}

// ----- persistent backends: close, open again -----

pub(super) fn records_survive_reopen<S: Store>(open: impl Fn() -> S) {
    let store = open();
    populated(&store, "a", "img_1", "sess_1", 1);
    store.create_container("b", Some("py"), 4).unwrap();
    store
        .put_definition(&Definition {
            name: "d".into(),
            ..Default::default()
        })
        .unwrap();
    store.put_token(&token("tok_a", "hash_a", 1)).unwrap();
    store.revoke_token("tok_a", 5).unwrap();
    // Replay entries are not durable on their own: the next durable write carries them.
    store.append_replay(&[replay("sess_1", 4, 4)]).unwrap();
    store.append_message("sess_1", &message("m2")).unwrap();
    let containers = store.list_containers().unwrap();
    let image = store.get_image("img_1").unwrap();
    let sessions = store.list_sessions("img_1").unwrap();
    let messages = store.list_messages("sess_1").unwrap();
    let replayed = store.read_replay("sess_1", 0, usize::MAX).unwrap();
    let tokens = store.list_tokens().unwrap();
    let definitions = store.list_definitions().unwrap();
    drop(store);

    let store = open();
    assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
    assert_eq!(store.list_containers().unwrap(), containers);
    assert_eq!(store.get_image("img_1").unwrap(), image);
    assert_eq!(store.list_sessions("img_1").unwrap(), sessions);
    assert_eq!(store.list_messages("sess_1").unwrap(), messages);
    assert_eq!(
        store.read_replay("sess_1", 0, usize::MAX).unwrap(),
        replayed
    );
    assert_eq!(store.max_replay_cursor().unwrap(), 4);
    assert_eq!(store.list_tokens().unwrap(), tokens);
    assert_eq!(store.list_definitions().unwrap(), definitions);
    assert_eq!(
        store.append_message("sess_1", &message("m3")).unwrap(),
        3,
        "sequence numbers continue"
    );
}

pub(super) fn scheduler_tables_survive_reopen<S: Store>(open: impl Fn() -> S) {
    let store = open();
    let sched = store.scheduler_store().unwrap();
    let instance = sched.scheduler_instance().unwrap();
    sched.put_node(&node("n1")).unwrap();
    sched.put_template(&template("py")).unwrap();
    sched.put_sandbox(&sandbox("sbx_1")).unwrap();
    sched
        .put_execution(&execution("exec_1", "sbx_1", 1))
        .unwrap();
    drop(sched);
    drop(store);

    let store = open();
    let sched = store.scheduler_store().unwrap();
    assert_eq!(sched.scheduler_instance().unwrap(), instance);
    assert_eq!(sched.list_nodes().unwrap(), [node("n1")]);
    assert_eq!(sched.list_templates().unwrap(), [template("py")]);
    assert_eq!(sched.list_sandboxes().unwrap(), [sandbox("sbx_1")]);
    assert_eq!(
        sched.list_executions("sbx_1").unwrap(),
        [execution("exec_1", "sbx_1", 1)]
    );
}

// ----- cluster membership and container leases -----

/// One server alone: every lease it asks for is its own, kept at one epoch while it renews,
/// and its writes under it succeed. (Contention between servers is PostgreSQL's alone:
/// `store/postgres/cluster/tests.rs`.)
pub(super) fn a_lone_member_holds_its_leases_and_writes_under_them(store: &dyn Store) {
    use crate::store::LeaseClaim;
    use std::time::Duration;
    let ttl = Duration::from_secs(30);
    store.join_cluster(&member("srv_a")).unwrap();
    store.heartbeat(false).unwrap();
    let LeaseClaim::Held(lease) = store.acquire_lease("c1", "srv_a", ttl).unwrap() else {
        panic!("a lone server must get the lease of c1");
    };
    assert_eq!(
        (lease.container_id.as_str(), lease.owner.as_str()),
        ("c1", "srv_a")
    );
    assert!(lease.epoch >= 1);
    populated(store, "c1", "i1", "s1", 1);
    assert_eq!(message_ids(store, "s1"), ["m0", "m1"]);
    assert!(
        store.renew_lease(&lease, ttl).unwrap(),
        "a held lease renews"
    );
    assert_eq!(
        store.acquire_lease("c1", "srv_a", ttl).unwrap(),
        LeaseClaim::Held(lease.clone()),
        "asking again for one's own live lease keeps its epoch"
    );
    store.append_message("s1", &message("m2")).unwrap();
    assert_eq!(store.count_messages("s1").unwrap(), 3);
    if let Some(stored) = store.get_lease("c1").unwrap() {
        assert_eq!(
            (stored.owner.as_str(), stored.epoch, stored.live),
            ("srv_a", lease.epoch, true)
        );
    }
    assert!(
        store.release_lease(&lease).unwrap(),
        "a held lease is released"
    );
    for m in store.cluster_members().unwrap() {
        assert_eq!((m.id.as_str(), m.draining), ("srv_a", false));
    }
}
