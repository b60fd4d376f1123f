//! 100 agents in 10 containers receiving messages at once: every history complete and ordered.

use agentvm::*;
use agentvm_e2e::{collect_turn, mock_vm_at};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_agents_in_ten_containers_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let vm = mock_vm_at(dir.path()).await;
    const MESSAGES: usize = 5;
    let mut tasks = Vec::new();
    for c in 0..10 {
        for a in 0..10 {
            let vm = vm.clone();
            tasks.push(tokio::spawn(async move {
                let container = format!("tenant-{c}");
                let model = if a % 2 == 0 { "multi-delta" } else { "default" };
                let image = vm
                    .images()
                    .create(
                        &container,
                        ImageConfig {
                            model: Some(model.into()),
                            ..Default::default()
                        },
                    )
                    .await
                    .unwrap()
                    .record;
                let mut sub = vm.sessions().events(&image.session_id).await.unwrap();
                // Send all messages at once; they queue and are answered in order.
                let mut sent = Vec::new();
                for m in 0..MESSAGES {
                    sent.push(
                        vm.agents()
                            .send_to_image(&image.image_id, format!("{c}/{a}/{m}"))
                            .await
                            .unwrap(),
                    );
                }
                for _ in 0..MESSAGES {
                    let events = collect_turn(&mut sub).await;
                    assert_eq!(
                        events.last().unwrap().payload,
                        EventPayload::ConversationEnd {
                            reason: EndReason::Completed
                        }
                    );
                }
                (container, image, sent)
            }));
        }
    }
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap());
    }
    assert_eq!(vm.container_manager().len(), 100);
    for (container, image, sent) in results {
        let history = vm.images().messages(&image.image_id).await.unwrap();
        assert_eq!(
            history.len(),
            2 * MESSAGES,
            "{container}/{}",
            image.image_id
        );
        let users: Vec<_> = history
            .iter()
            .filter(|m| m.role == Role::User)
            .map(|m| m.id.clone())
            .collect();
        let sent_ids: Vec<_> = sent.iter().map(|s| s.message_id.clone()).collect();
        assert_eq!(users, sent_ids, "user messages stored in send order");
        assert_eq!(
            history.iter().filter(|m| m.role == Role::Assistant).count(),
            MESSAGES
        );
        // Each answer comes after the message it answers.
        let first_user = history.iter().position(|m| m.role == Role::User).unwrap();
        let first_answer = history
            .iter()
            .position(|m| m.role == Role::Assistant)
            .unwrap();
        assert!(first_user < first_answer);
    }
    for c in 0..10 {
        assert_eq!(
            vm.images()
                .list(Some(&format!("tenant-{c}")))
                .await
                .unwrap()
                .len(),
            10
        );
        assert_eq!(
            vm.agents()
                .list(Some(&format!("tenant-{c}")))
                .await
                .unwrap()
                .len(),
            10
        );
    }
}
