//! Helper process for the crash-safety test: appends messages to a session in a redb file,
//! printing `ok <id>` after each append has returned (and so is durable), until killed.
//!
//! Usage: `append-child <db-path> <round>`

use agentvm::{Definition, ImageRecord, Message, RedbStore, SessionRecord, Store};
use std::io::Write;

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(path), Some(round)) = (args.next(), args.next()) else {
        eprintln!("usage: append-child <db-path> <round>");
        std::process::exit(2);
    };
    let store = match RedbStore::open(&path) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("open failed: {}", e.chain());
            std::process::exit(1);
        }
    };
    if store.get_session("sess_crash").ok().flatten().is_none() {
        let image = ImageRecord {
            image_id: "img_crash".into(),
            container_id: "crash".into(),
            session_id: "sess_crash".into(),
            name: "crash".into(),
            description: None,
            definition_name: None,
            definition: Definition::default(),
            created_at: 0,
            updated_at: 0,
        };
        let session = SessionRecord {
            session_id: "sess_crash".into(),
            image_id: "img_crash".into(),
            container_id: "crash".into(),
            title: None,
            created_at: 0,
            updated_at: 0,
        };
        if let Err(e) = store.create_image(&image, &session) {
            eprintln!("setup failed: {}", e.chain());
            std::process::exit(1);
        }
    }
    let stdout = std::io::stdout();
    for i in 0.. {
        let id = format!("r{round}-{i}");
        // Bodies of varying size, so commits span different numbers of pages.
        let body = "x".repeat((i * 37) % 5000);
        let message = Message::user(id.clone(), body.into(), i as i64);
        if let Err(e) = store.append_message("sess_crash", &message) {
            eprintln!("append failed: {}", e.chain());
            std::process::exit(1);
        }
        let mut out = stdout.lock();
        let _ = writeln!(out, "ok {id}");
        let _ = out.flush();
    }
}
