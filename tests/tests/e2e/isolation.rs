//! Containers are isolation units: nothing of one is visible through another's listings,
//! ids or events.

use agentvm::*;
use agentvm_e2e::{collect_turn, mock_vm};

#[tokio::test]
async fn listings_ids_and_events_do_not_cross_containers() {
    let vm = mock_vm().await;
    let a = vm.scoped(Scope::containers(["tenant-a"]));
    let b = vm.scoped(Scope::containers(["tenant-b"]));

    let img_a = a
        .images()
        .create("tenant-a", Default::default())
        .await
        .unwrap()
        .record;
    let img_b = b
        .images()
        .create("tenant-b", Default::default())
        .await
        .unwrap()
        .record;

    // Listings.
    assert_eq!(a.containers().list().await.unwrap(), ["tenant-a"]);
    assert_eq!(b.containers().list().await.unwrap(), ["tenant-b"]);
    let listed: Vec<_> = a
        .images()
        .list(None)
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.image_id)
        .collect();
    assert_eq!(listed, std::slice::from_ref(&img_a.image_id));
    let e = a.images().list(Some("tenant-b")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unauthorized);

    // Ids of the other container behave as unknown.
    assert!(a.images().get(&img_b.image_id).await.unwrap().is_none());
    assert!(!a.containers().exists("tenant-b").await.unwrap());
    assert!(a.sessions().get(&img_b.session_id).await.unwrap().is_none());
    assert_eq!(
        a.images()
            .messages(&img_b.image_id)
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::NotFound
    );
    assert_eq!(
        a.agents()
            .send_to_image(&img_b.image_id, "hi")
            .await
            .unwrap_err()
            .to_string(),
        format!("Image not found: {}", img_b.image_id)
    );
    assert_eq!(
        a.sessions()
            .create(&img_b.image_id, None)
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::NotFound
    );
    assert_eq!(
        a.sessions()
            .events(&img_b.session_id)
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::NotFound
    );
    assert_eq!(
        a.containers().create("tenant-b").await.unwrap_err().kind(),
        ErrorKind::Unauthorized
    );
    assert_eq!(
        a.containers().delete("tenant-b").await.unwrap_err().kind(),
        ErrorKind::Unauthorized
    );
    // Deleting another tenant's image is a no-op, not a deletion.
    a.images().delete(&img_b.image_id).await.unwrap();
    assert!(b.images().get(&img_b.image_id).await.unwrap().is_some());

    // Agents.
    let sent_b = b
        .agents()
        .send_to_image(&img_b.image_id, "hello b")
        .await
        .unwrap();
    assert!(!a.agents().get(&sent_b.agent_id).await.unwrap().exists);
    assert!(a.agents().list(None).await.unwrap().is_empty());
    assert!(!a.agents().destroy(&sent_b.agent_id).await.unwrap());
    assert_eq!(
        a.agents()
            .send(&sent_b.agent_id, "x")
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::NotFound
    );
    assert_eq!(
        a.agents()
            .interrupt(&sent_b.agent_id)
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::NotFound
    );
    assert!(b.agents().get(&sent_b.agent_id).await.unwrap().exists);

    // Events: a wide subscriber of tenant-a sees none of tenant-b's.
    let mut wide_a = a.subscribe(EventFilter::everything()).await.unwrap();
    let mut wide_b = b.subscribe(EventFilter::everything()).await.unwrap();
    b.containers().create("tenant-b").await.unwrap();
    let mut sub_b = b.sessions().events(&img_b.session_id).await.unwrap();
    b.agents()
        .send_to_image(&img_b.image_id, "again")
        .await
        .unwrap();
    collect_turn(&mut sub_b).await;
    let mut seen_b = 0;
    while let Some(BusItem::Event(p)) = wide_b.try_recv() {
        assert_eq!(p.event.container_id(), Some("tenant-b"));
        seen_b += 1;
    }
    assert!(seen_b > 5);
    assert!(
        wide_a.try_recv().is_none(),
        "tenant-a saw an event of tenant-b"
    );
}

#[tokio::test]
async fn deleting_a_container_cascades_and_leaves_others_alone() {
    let dir = tempfile::tempdir().unwrap();
    let vm = agentvm_e2e::mock_vm_at(dir.path()).await;
    let a = vm
        .images()
        .create("a", Default::default())
        .await
        .unwrap()
        .record;
    let b = vm
        .images()
        .create("b", Default::default())
        .await
        .unwrap()
        .record;
    let workdir_a = dir.path().join("containers/a/workdirs").join(&a.image_id);
    let workdir_b = dir.path().join("containers/b/workdirs").join(&b.image_id);
    assert!(workdir_a.is_dir() && workdir_b.is_dir());
    let mut sub = vm.sessions().events(&a.session_id).await.unwrap();
    vm.agents().send_to_image(&a.image_id, "hi").await.unwrap();
    collect_turn(&mut sub).await;
    assert!(vm.containers().delete("a").await.unwrap());
    assert!(vm.images().get(&a.image_id).await.unwrap().is_none());
    assert!(vm.sessions().get(&a.session_id).await.unwrap().is_none());
    assert!(vm.store().list_messages(&a.session_id).unwrap().is_empty());
    assert!(vm.agents().list(Some("a")).await.unwrap().is_empty());
    assert!(!dir.path().join("containers/a").exists());
    assert!(vm.images().get(&b.image_id).await.unwrap().is_some());
    assert!(workdir_b.is_dir());
}

#[tokio::test]
async fn deleting_an_image_stops_its_agent_and_removes_sessions_messages_and_workdir() {
    let dir = tempfile::tempdir().unwrap();
    let vm = agentvm_e2e::mock_vm_at(dir.path()).await;
    let img = vm
        .images()
        .create("a", Default::default())
        .await
        .unwrap()
        .record;
    let extra = vm
        .sessions()
        .create(&img.image_id, Some("second"))
        .await
        .unwrap();
    let mut sub = vm.sessions().events(&img.session_id).await.unwrap();
    let sent = vm
        .agents()
        .send_to_image(&img.image_id, "hi")
        .await
        .unwrap();
    collect_turn(&mut sub).await;
    vm.images().delete(&img.image_id).await.unwrap();
    assert!(!vm.agents().get(&sent.agent_id).await.unwrap().exists);
    assert!(vm
        .sessions()
        .get(&extra.session_id)
        .await
        .unwrap()
        .is_none());
    assert!(vm
        .store()
        .list_messages(&img.session_id)
        .unwrap()
        .is_empty());
    assert!(!dir
        .path()
        .join("containers/a/workdirs")
        .join(&img.image_id)
        .exists());
    // The container itself stays.
    assert!(vm.containers().exists("a").await.unwrap());
}
