//! The C ABI round trip against the Rust call it wraps (issue 11's target: C ABI `image_get`
//! <= 2x the Rust in-process call), in one process on one runtime setup (the mock LLM; in
//! memory and on a temp redb data dir):
//!
//! - `ffi/image_get/*`: what a C caller does: `agentvm_request` with the request JSON (built
//!   once), read the answer `char *`, `agentvm_string_free` it.
//! - `ffi/embed_request/*`: the embed layer's JSON `Embed::request` alone (parse the JSON
//!   command, run it, serialize the answer's `data`), awaited on the process runtime: the C
//!   ABI's cost minus its C strings and its entry (`Embed::call_blocking`: one poll on the
//!   calling thread inside the runtime's context, a `block_on` only for calls that wait).
//! - `ffi/rust_image_get/*`: the typed `Runtime::request(Command::ImageGet)` as
//!   `benches/request.rs` measures it, on the same (process) runtime.

// The workspace denies `unsafe_code`. Calling the C ABI means calling `unsafe extern "C"`
// functions with raw pointers, exactly as a C caller would; this bench does nothing else
// unsafe. Each block states the header's contract it keeps.
#![allow(unsafe_code)]

use agentvm::{AgentVm, Command, ImageGetRequest, Response, Runtime, RuntimeExt};
use agentvm_benches::{mock_vm, CONTAINER_ID};
use agentvm_embed::{process, Embed, EmbedOptions};
use agentvm_ffi::{
    agentvm_open, agentvm_request, agentvm_runtime_free, agentvm_string_free, AgentvmResult,
    AgentvmRuntime,
};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::ffi::{c_char, CStr, CString};
use std::hint::black_box;
use std::path::Path;

/// The open options: the mock LLM, in memory or on `dir`.
fn options(dir: Option<&Path>) -> String {
    match dir {
        Some(d) => serde_json::json!({"llm": "mock", "dataDir": d}).to_string(),
        None => r#"{"llm":"mock"}"#.to_string(),
    }
}

fn image_create_json() -> String {
    serde_json::json!({"type": "image_create_request", "data": {"containerId": CONTAINER_ID}})
        .to_string()
}

fn image_get_json(image_id: &str) -> String {
    serde_json::json!({"type": "image_get_request", "data": {"imageId": image_id}}).to_string()
}

fn image_id_of(answer: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(answer).expect("the answer is JSON");
    v["record"]["imageId"]
        .as_str()
        .expect("the answer names the image")
        .to_string()
}

/// One C ABI request: the answer's text, freed the way C frees it.
fn c_request(rt: *const AgentvmRuntime, request: &CStr) -> usize {
    let mut out: *mut c_char = std::ptr::null_mut();
    // SAFETY: `rt` is a live handle from `agentvm_open`; `request` is NUL-terminated and
    // outlives the call; `out` is a local valid for a write.
    let rc = unsafe { agentvm_request(rt, request.as_ptr(), -1, 0, &mut out) };
    assert_eq!(rc, AgentvmResult::Ok, "agentvm_request failed");
    // SAFETY: on OK `out` is a NUL-terminated string agentvm handed us, not yet freed.
    let len = unsafe { CStr::from_ptr(out) }.to_bytes().len();
    // SAFETY: `out` came from agentvm and is freed once, here.
    unsafe { agentvm_string_free(out) };
    len
}

fn c_answer(rt: *const AgentvmRuntime, request: &CStr) -> String {
    let mut out: *mut c_char = std::ptr::null_mut();
    // SAFETY: as in `c_request`.
    let rc = unsafe { agentvm_request(rt, request.as_ptr(), -1, 0, &mut out) };
    assert_eq!(rc, AgentvmResult::Ok, "agentvm_request failed");
    // SAFETY: as in `c_request`.
    let text = unsafe { CStr::from_ptr(out) }
        .to_str()
        .expect("UTF-8")
        .to_owned();
    // SAFETY: as in `c_request`.
    unsafe { agentvm_string_free(out) };
    text
}

fn bench_c(c: &mut Criterion, name: &str, dir: Option<&Path>) {
    let opts = CString::new(options(dir)).unwrap();
    let mut rt: *mut AgentvmRuntime = std::ptr::null_mut();
    // SAFETY: `opts` is NUL-terminated; `rt` is a local valid for a write.
    let rc = unsafe { agentvm_open(opts.as_ptr(), -1, 0, &mut rt) };
    assert_eq!(rc, AgentvmResult::Ok, "agentvm_open failed");
    let create = CString::new(image_create_json()).unwrap();
    let image_id = image_id_of(&c_answer(rt, &create));
    let get = CString::new(image_get_json(&image_id)).unwrap();
    assert!(c_answer(rt, &get).contains(&image_id));

    let mut group = c.benchmark_group("ffi");
    group.throughput(Throughput::Elements(1));
    group.bench_function(format!("image_get/{name}"), |b| {
        b.iter(|| c_request(rt, black_box(&get)))
    });
    group.finish();
    // SAFETY: `rt` is live, freed once, with no other call on it running.
    unsafe { agentvm_runtime_free(rt) };
}

fn bench_embed(c: &mut Criterion, name: &str, dir: Option<&Path>) {
    let runtime = process::runtime().expect("the process runtime");
    let embed = runtime.block_on(async {
        Embed::open(EmbedOptions::from_json(&options(dir)).expect("options"))
            .await
            .expect("opening the embed handle")
    });
    let image_id = runtime.block_on(async {
        image_id_of(
            &embed
                .request(&image_create_json())
                .await
                .expect("image_create"),
        )
    });
    let get = image_get_json(&image_id);

    let mut group = c.benchmark_group("ffi");
    group.throughput(Throughput::Elements(1));
    group.bench_function(format!("embed_request/{name}"), |b| {
        b.to_async(&*runtime).iter(|| async {
            let answer = embed.request(black_box(&get)).await.expect("image_get");
            assert!(answer.len() > 20);
            answer
        })
    });
    group.finish();
    runtime.block_on(embed.close());
}

fn bench_rust(c: &mut Criterion, name: &str, dir: Option<&Path>) {
    let runtime = process::runtime().expect("the process runtime");
    let vm: AgentVm = runtime.block_on(mock_vm(dir));
    let image_id = runtime.block_on(async {
        vm.images()
            .create(CONTAINER_ID, Default::default())
            .await
            .expect("creating the bench image")
            .record
            .image_id
    });
    let mut group = c.benchmark_group("ffi");
    group.throughput(Throughput::Elements(1));
    group.bench_function(format!("rust_image_get/{name}"), |b| {
        b.to_async(&*runtime).iter(|| async {
            let response = vm
                .request(Command::ImageGet(ImageGetRequest {
                    image_id: image_id.clone(),
                }))
                .await
                .expect("image_get_request");
            match response {
                Response::ImageGet(r) if r.record.is_some() => r,
                other => panic!("unexpected response to image_get_request: {other:?}"),
            }
        })
    });
    group.finish();
    runtime.block_on(vm.close());
}

fn ffi(c: &mut Criterion) {
    for (name, file) in [("memory", false), ("file", true)] {
        // One temp dir per handle: a redb file is opened by one handle at a time.
        let dirs: Vec<_> = (0..3)
            .map(|_| tempfile::tempdir().expect("creating a temp dir"))
            .collect();
        let dir = |i: usize| file.then(|| dirs[i].path());
        bench_rust(c, name, dir(0));
        bench_embed(c, name, dir(1));
        bench_c(c, name, dir(2));
    }
}

criterion_group!(benches, ffi);
criterion_main!(benches);
