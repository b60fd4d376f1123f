//! Two servers on one database, as two stores on one schema: leases, takeover and fencing.

use crate::error::ErrorKind;
use crate::model::{Definition, ImageRecord, Message, SessionRecord};
use crate::store::postgres::testing::{self, runtime, schema_url};
use crate::store::postgres::PostgresStore;
use crate::store::{ClusterMember, Lease, LeaseClaim, Store};
use std::time::Duration;

/// Two stores on one fresh schema, joined as servers `srv_a` and `srv_b`, and the schema's URL.
fn two_servers() -> Option<(tempfile::TempDir, String, PostgresStore, PostgresStore)> {
    testing::server_url()?;
    let dir = tempfile::tempdir().unwrap();
    let url = schema_url(dir.path());
    let a = runtime().block_on(PostgresStore::open(&url)).unwrap();
    let b = runtime().block_on(PostgresStore::open(&url)).unwrap();
    for (store, id) in [(&a, "srv_a"), (&b, "srv_b")] {
        store
            .join_cluster(&ClusterMember {
                id: id.into(),
                url: format!("http://{id}.example:8080"),
            })
            .unwrap();
    }
    Some((dir, url, a, b))
}

fn held(claim: LeaseClaim) -> Lease {
    match claim {
        LeaseClaim::Held(lease) => lease,
        other => panic!("expected the lease, got {other:?}"),
    }
}

fn image(container: &str, id: &str) -> (ImageRecord, SessionRecord) {
    let image = ImageRecord {
        image_id: format!("img_{id}"),
        container_id: container.into(),
        session_id: format!("ses_{id}"),
        name: "n".into(),
        description: None,
        definition_name: None,
        definition: Definition::default(),
        created_at: 1,
        updated_at: 1,
    };
    let session = SessionRecord {
        session_id: format!("ses_{id}"),
        image_id: image.image_id.clone(),
        container_id: container.into(),
        title: None,
        created_at: 1,
        updated_at: 1,
    };
    (image, session)
}

fn message(id: &str) -> Message {
    Message::user(id.into(), format!("text of {id}").into(), 1)
}

/// `(lease_owner, lease_epoch)` of every message of the schema, by session and seq.
fn stamps(url: &str) -> Vec<(Option<String>, Option<i64>)> {
    runtime().block_on(async {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        client
            .query(
                "SELECT lease_owner, lease_epoch FROM messages ORDER BY session_id, seq",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect()
    })
}

#[test]
fn a_live_lease_is_refused_to_others_and_an_expired_one_moves_with_a_new_epoch() {
    let Some((_dir, url, a, b)) = two_servers() else {
        return;
    };
    let ttl = Duration::from_millis(600);
    let la = held(a.acquire_lease("c", "srv_a", ttl).unwrap());
    assert_eq!(la.epoch, 1);
    assert_eq!(
        b.acquire_lease("c", "srv_b", ttl).unwrap(),
        LeaseClaim::Taken {
            owner: "srv_a".into(),
            url: Some("http://srv_a.example:8080".into()),
            epoch: 1
        }
    );
    let (i, s) = image("c", "1");
    a.create_image(&i, &s).unwrap();
    a.append_message("ses_1", &message("m0")).unwrap();

    std::thread::sleep(ttl + Duration::from_millis(200));
    let lb = held(b.acquire_lease("c", "srv_b", ttl * 20).unwrap());
    assert_eq!((lb.owner.as_str(), lb.epoch), ("srv_b", 2));

    // A (paused past its TTL) comes back: every write for c fails and writes nothing.
    let err = a.append_message("ses_1", &message("stale")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    let text = err.to_string();
    assert!(
        text.contains("owned by server srv_b at http://srv_b.example:8080 (epoch 2)")
            && text.contains("lease (epoch 1) was lost; nothing was written"),
        "{text}"
    );
    let (i2, s2) = image("c", "2");
    assert_eq!(
        a.create_image(&i2, &s2).unwrap_err().kind(),
        ErrorKind::Conflict
    );
    assert_eq!(a.get_image("img_2").unwrap(), None);
    assert_eq!(
        a.delete_session("ses_1").unwrap_err().kind(),
        ErrorKind::Conflict
    );
    assert!(
        !a.renew_lease(&la, ttl).unwrap(),
        "a lost lease does not renew"
    );
    assert!(!a.release_lease(&la).unwrap(), "nor can it be released");

    b.append_message("ses_1", &message("m1")).unwrap();
    assert_eq!(
        b.count_messages("ses_1").unwrap(),
        2,
        "the stale write left nothing"
    );
    assert_eq!(
        stamps(&url),
        [
            (Some("srv_a".to_string()), Some(1)),
            (Some("srv_b".to_string()), Some(2))
        ],
        "every message names the one server and epoch it was written under"
    );
    let stored = b.get_lease("c").unwrap().unwrap();
    assert_eq!(
        (stored.owner.as_str(), stored.epoch, stored.live),
        ("srv_b", 2, true)
    );
}

#[test]
fn a_released_lease_is_taken_at_once_and_its_old_holder_is_fenced() {
    let Some((_dir, _url, a, b)) = two_servers() else {
        return;
    };
    let long = Duration::from_secs(60);
    let la = held(a.acquire_lease("c", "srv_a", long).unwrap());
    assert!(matches!(
        b.acquire_lease("c", "srv_b", long).unwrap(),
        LeaseClaim::Taken { .. }
    ));
    a.heartbeat(true).unwrap();
    assert!(a.release_lease(&la).unwrap());
    let lb = held(b.acquire_lease("c", "srv_b", long).unwrap());
    assert_eq!(lb.epoch, la.epoch + 1, "no TTL to wait for after a release");
    let err = a.create_container("c", None, 1).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    b.create_container("c", None, 1).unwrap();
    let members = b.cluster_members().unwrap();
    let view: Vec<(&str, bool)> = members
        .iter()
        .map(|m| (m.id.as_str(), m.draining))
        .collect();
    assert_eq!(view, [("srv_a", true), ("srv_b", false)]);
    assert!(members.iter().all(|m| m.heartbeat_age_ms < 60_000));
}

#[test]
fn a_member_writes_nothing_for_a_container_it_holds_no_lease_on() {
    let Some((_dir, _url, a, b)) = two_servers() else {
        return;
    };
    let err = a.create_container("c", None, 1).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    assert!(
        err.to_string()
            .contains("owned by no server; server srv_a holds no lease on it"),
        "{err}"
    );
    assert_eq!(b.get_container("c").unwrap(), None);
    // Global records (definitions, tokens) belong to no container and are not fenced.
    a.put_definition(&Definition {
        name: "d".into(),
        ..Default::default()
    })
    .unwrap();
}

#[test]
fn an_owner_taking_its_own_expired_lease_again_starts_a_new_epoch() {
    let Some((_dir, _url, a, _b)) = two_servers() else {
        return;
    };
    let ttl = Duration::from_millis(300);
    let first = held(a.acquire_lease("c", "srv_a", ttl).unwrap());
    std::thread::sleep(ttl + Duration::from_millis(200));
    assert!(
        !a.renew_lease(&first, ttl).unwrap(),
        "an expired lease does not renew"
    );
    let again = held(a.acquire_lease("c", "srv_a", ttl * 100).unwrap());
    assert_eq!(again.epoch, first.epoch + 1);
    a.create_container("c", None, 1).unwrap();
}

#[test]
fn racing_servers_get_an_expired_lease_once() {
    let Some((_dir, _url, a, b)) = two_servers() else {
        return;
    };
    let ttl = Duration::from_secs(60);
    for round in 0..20 {
        let container = format!("c{round}");
        let (ra, rb) = std::thread::scope(|s| {
            let ta = s.spawn(|| a.acquire_lease(&container, "srv_a", ttl).unwrap());
            let tb = s.spawn(|| b.acquire_lease(&container, "srv_b", ttl).unwrap());
            (ta.join().unwrap(), tb.join().unwrap())
        });
        let winners = [&ra, &rb]
            .iter()
            .filter(|c| matches!(c, LeaseClaim::Held(_)))
            .count();
        assert_eq!(winners, 1, "round {round}: {ra:?} / {rb:?}");
    }
}

#[test]
fn servers_contending_for_a_container_never_share_an_epoch_nor_write_after_losing_it() {
    let Some((_dir, url, a, b)) = two_servers() else {
        return;
    };
    let ttl = Duration::from_millis(150);
    let setup = held(a.acquire_lease("c", "srv_a", ttl).unwrap());
    let (i, s) = image("c", "1");
    a.create_image(&i, &s).unwrap();
    assert!(a.release_lease(&setup).unwrap());

    // Each server takes the lease whenever it can, writes a few messages, then stalls past the
    // TTL (a pause) and tries once more: by then the other may have taken the container over.
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    let contend = |store: &PostgresStore, me: &str| {
        let (mut written, mut refused) = (0u32, 0u32);
        while std::time::Instant::now() < deadline {
            let LeaseClaim::Held(_) = store.acquire_lease("c", me, ttl).unwrap() else {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            };
            for n in 0..4 {
                if n == 3 {
                    std::thread::sleep(ttl + Duration::from_millis(100));
                }
                match store.append_message("ses_1", &message(&format!("{me}-{written}"))) {
                    Ok(_) => written += 1,
                    Err(e) => {
                        assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
                        refused += 1;
                        break;
                    }
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        (written, refused)
    };
    let ((wa, ra), (wb, rb)) = std::thread::scope(|s| {
        let ta = s.spawn(|| contend(&a, "srv_a"));
        let tb = s.spawn(|| contend(&b, "srv_b"));
        (ta.join().unwrap(), tb.join().unwrap())
    });
    assert!(
        wa > 0 && wb > 0,
        "both servers held the container: {wa} / {wb}"
    );
    eprintln!("written {wa} / {wb}, refused {ra} / {rb}");

    // From the store: in message order, epochs never go back (no write of a server that had
    // lost the container landed after its successor's), and each epoch has one writer.
    let stamps = stamps(&url);
    assert_eq!(stamps.len() as u32, wa + wb);
    let mut owner_of = std::collections::HashMap::new();
    let mut last = 0;
    for (owner, epoch) in stamps {
        let (owner, epoch) = (owner.unwrap(), epoch.unwrap());
        assert!(epoch >= last, "epoch {epoch} written after epoch {last}");
        last = epoch;
        let first = owner_of.entry(epoch).or_insert_with(|| owner.clone());
        assert_eq!(*first, owner, "two servers wrote in epoch {epoch}");
    }
    assert!(owner_of.len() >= 2);
}
