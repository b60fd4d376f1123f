//! The generated schema against the Rust types it comes from: every command is in it, real
//! serialized values validate, wrong ones do not, generation is deterministic, and the committed
//! files are what the generator writes.

use agentvm_model::scheduler::{
    ExecStatus, Execution, FileEntry, FileKind, Liveness, NetworkPolicy, NodeStatus, Resources,
    RuntimeNode, Sandbox, SandboxRequest, SandboxStatus, SecurityPolicy, Template, TemplateSpec,
    Termination, TerminationReason, TlsFiles,
};
use agentvm_model::*;
use agentvm_schema::document::{document, SCHEMA_PATH};
use agentvm_schema::{drifted, outputs, repository_root};
use serde_json::{json, Value};
use std::collections::BTreeMap;

fn schema() -> Value {
    document().expect("the schema is generated")
}

/// A validator for the definition `name` of the document.
fn validator(doc: &Value, name: &str) -> jsonschema::Validator {
    let schema = json!({
        "$schema": doc["$schema"],
        "$ref": format!("#/$defs/{name}"),
        "$defs": doc["$defs"],
    });
    jsonschema::validator_for(&schema).expect("the schema compiles")
}

fn assert_valid(validator: &jsonschema::Validator, value: &Value, what: &str) {
    let errors: Vec<String> = validator
        .iter_errors(value)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{what} {value} is refused: {errors:#?}");
}

fn root_validator(doc: &Value) -> jsonschema::Validator {
    jsonschema::validator_for(doc).expect("the schema compiles")
}

fn name_of(reference: &Value) -> &str {
    reference["$ref"]
        .as_str()
        .and_then(|r| r.strip_prefix("#/$defs/"))
        .expect("a $ref into $defs")
}

#[test]
fn every_command_has_a_request_and_a_response_type() {
    let doc = schema();
    let commands = doc["x-commands"].as_object().expect("x-commands");
    assert_eq!(commands.len(), CommandKind::ALL.len());
    for &kind in CommandKind::ALL {
        let name = kind.type_name().trim_end_matches("_request");
        let c = &commands[name];
        assert_eq!(c["requestType"], kind.type_name(), "{name}");
        assert_eq!(c["responseType"], kind.response_type(), "{name}");
        for side in ["request", "response"] {
            let def = name_of(&c[side]);
            let pascal: String = name
                .split('_')
                .map(|p| p[..1].to_uppercase() + &p[1..])
                .collect();
            assert_eq!(
                def,
                format!(
                    "{pascal}{}",
                    if side == "request" {
                        "Request"
                    } else {
                        "Response"
                    }
                ),
                "{name} {side} is named after the command"
            );
            assert!(doc["$defs"].get(def).is_some(), "{name}: {def} is defined");
        }
        assert!(
            c["description"].as_str().is_some_and(|d| !d.is_empty()),
            "{name} has its documentation"
        );
    }
}

fn commands() -> Vec<Command> {
    let mut exec = SandboxExecRequest {
        sandbox_id: "sbx_1".into(),
        command: vec!["/bin/sh".into(), "-c".into(), "echo hi".into()],
        ..Default::default()
    };
    exec.env.insert("A".into(), "1".into());
    exec.timeout_ms = Some(5000);
    let mut sandbox = SandboxRequest::new("busybox");
    sandbox.owner = Some("user-alice".into());
    sandbox.memory_mb = Some(64);
    vec![
        ContainerCreateRequest {
            container_id: "user-alice".into(),
            sandbox_template: Some("busybox".into()),
        }
        .into(),
        ContainerListRequest {}.into(),
        ImageCreateRequest {
            container_id: "user-alice".into(),
            config: ImageConfig {
                name: Some("helper".into()),
                system_prompt: Some("Be brief.".into()),
                mcp_servers: Some(
                    serde_json::from_value(json!({
                        "fs": {"command": "mcp-fs", "args": ["--root", "."]},
                        "web": {"type": "http", "url": "http://127.0.0.1:9/mcp", "headers": {"X-Key": "k"}}
                    }))
                    .expect("valid mcpServers"),
                ),
                definition: Some(json!("coder")),
                tools: Some(vec!["bash".into()]),
                ..Default::default()
            },
        }
        .into(),
        ImageGetRequest {
            image_id: "img_1".into(),
        }
        .into(),
        ImageUpdateRequest {
            image_id: "img_1".into(),
            updates: ImageUpdates {
                name: Some("renamed".into()),
                description: None,
            },
        }
        .into(),
        MessageSendRequest {
            image_id: Some("img_1".into()),
            agent_id: None,
            session_id: None,
            content: Content::Parts(vec![
                ContentPart::Text {
                    text: "look".into(),
                },
                ContentPart::Image {
                    data: "AAA=".into(),
                    media_type: "image/png".into(),
                },
                ContentPart::File {
                    data: "AAA=".into(),
                    media_type: "text/plain".into(),
                    filename: Some("a.txt".into()),
                },
            ]),
        }
        .into(),
        MessageSendRequest {
            image_id: None,
            agent_id: None,
            session_id: Some("sess_1".into()),
            content: "hello".into(),
        }
        .into(),
        AgentInterruptRequest::default().into(),
        DefinitionRegisterRequest {
            definition: Definition {
                name: "coder".into(),
                tools: vec!["bash".into(), "read_file".into()],
                model: Some("m".into()),
                ..Default::default()
            },
        }
        .into(),
        SessionUpdateRequest {
            session_id: "sess_1".into(),
            title: None,
        }
        .into(),
        NodeRegisterRequest {
            node_id: "n1".into(),
            hostname: None,
            runtime_type: None,
            ip_address: None,
            api_endpoint: "tcp://10.0.0.2:2376".into(),
            tls: Some(TlsFiles {
                ca: "/etc/ca.pem".into(),
                cert: "/etc/cert.pem".into(),
                key: "/etc/key.pem".into(),
            }),
            total_cpu_cores: Some(2.5),
            total_memory_mb: Some(4096),
            max_containers: None,
            cached_images: Some(vec!["busybox:latest".into()]),
            labels: BTreeMap::from([("zone".into(), "a".into())]),
            liveness: Some(Liveness::Heartbeat),
        }
        .into(),
        NodeUpdateRequest {
            node_id: "n1".into(),
            status: NodeStatus::Draining,
        }
        .into(),
        TemplateCreateRequest {
            template_id: "busybox".into(),
            name: "Busybox".into(),
            docker_image: "busybox:latest".into(),
            runtime_type: None,
            default_cpu_cores: Some(0.5),
            default_memory_mb: Some(128),
            default_disk_mb: None,
            default_timeout_s: None,
            idle_timeout_s: Some(60),
            idle_action: Default::default(),
            env: BTreeMap::new(),
            network: Some(NetworkPolicy::Bridge {
                name: "sandboxes".into(),
                internal: true,
            }),
            credentials: Vec::new(),
            security: Some(SecurityPolicy::default()),
            workdir: Some("/work".into()),
            command: None,
            warm_pool_size: Some(2),
        }
        .into(),
        Command::SandboxCreate(sandbox),
        exec.into(),
        SandboxFileWriteRequest {
            sandbox_id: "sbx_1".into(),
            path: "a.bin".into(),
            content: "aGk=".into(),
            encoding: FileEncoding::Base64,
        }
        .into(),
        SandboxFileDeleteRequest {
            sandbox_id: "sbx_1".into(),
            path: "d".into(),
            recursive: true,
        }
        .into(),
        ExecutorExitedRequest {
            docker_container_id: "abc".into(),
            sandbox_id: Some("sbx_1".into()),
            exit_code: Some(137),
        }
        .into(),
        TokenCreateRequest {
            containers: Some(vec!["user-alice".into()]),
            all: false,
        }
        .into(),
        TokenCreateRequest {
            containers: None,
            all: true,
        }
        .into(),
    ]
}

fn image() -> ImageListItem {
    ImageListItem {
        image_id: "img_1".into(),
        container_id: "user-alice".into(),
        session_id: "sess_1".into(),
        name: "helper".into(),
        description: None,
        system_prompt: Some("Be brief.".into()),
        created_at: 1,
        updated_at: 2,
        online: true,
        agent_id: Some("agent_1".into()),
        definition_name: None,
        model: None,
    }
}

fn sandbox() -> Sandbox {
    Sandbox {
        id: "sbx_1".into(),
        template_id: "busybox".into(),
        docker_image: "busybox:latest".into(),
        node_id: "n1".into(),
        docker_container_id: Some("abc".into()),
        docker_container_name: "agentvm-sbx_1".into(),
        status: SandboxStatus::Terminated,
        resources: Resources {
            cpu_cores: 0.5,
            memory_mb: 64,
            disk_mb: None,
            pids_limit: 256,
        },
        env: BTreeMap::from([("A".into(), "1".into())]),
        user: "65534:65534".into(),
        uid_gid: Some((65534, 65534)),
        workdir: "/tmp".into(),
        network: "none".into(),
        read_only_root: false,
        owner: Some("user-alice".into()),
        warm: false,
        lifetime_s: 3600,
        idle_timeout_s: None,
        idle_action: Default::default(),
        expires_at: 10,
        paused_at: None,
        resumed_at: None,
        created_at: 1,
        ready_at: Some(2),
        last_activity_at: 3,
        executor_url: None,
        termination: Some(Termination {
            reason: TerminationReason::Requested,
            message: None,
            exit_code: None,
            at: 4,
        }),
    }
}

fn execution() -> Execution {
    Execution {
        id: "exec_1".into(),
        sandbox_id: "sbx_1".into(),
        command: vec!["true".into()],
        language: None,
        status: ExecStatus::Completed,
        stdout: "hi\n".into(),
        stderr: String::new(),
        truncated: true,
        exit_code: Some(0),
        error: None,
        created_at: 1,
        finished_at: Some(2),
        duration_ms: Some(1),
    }
}

fn responses() -> Vec<Response> {
    let token = TokenInfo {
        id: "tok_1".into(),
        containers: None,
        created_at: 1,
        revoked_at: Some(2),
    };
    vec![
        Response::ContainerGet(ContainerGetResponse {
            container_id: None,
            exists: false,
            sandbox_template: None,
        }),
        Response::ImageCreate(ImageCreateResponse {
            record: image(),
            subscriptions: vec!["sess_1".into()],
        }),
        Response::ImageBuild(ImageCreateResponse {
            record: image(),
            subscriptions: vec![],
        }),
        Response::ImageGet(ImageGetResponse {
            record: None,
            subscriptions: None,
        }),
        Response::ImageMessages(ImageMessagesResponse {
            image_id: "img_1".into(),
            has_more: true,
            next_cursor: Some(1),
            messages: vec![
                Message::user("msg_1".into(), "hi".into(), 1),
                Message::assistant(
                    "msg_2".into(),
                    "hello".into(),
                    2,
                    Some(Usage {
                        input_tokens: 3,
                        output_tokens: 4,
                    }),
                    Some("end_turn".into()),
                ),
                Message::tool_call(
                    "msg_3".into(),
                    ToolCall {
                        id: "call_1".into(),
                        name: "bash".into(),
                        input: json!({"command": "ls"}),
                    },
                    3,
                ),
                Message::tool_result(
                    "msg_4".into(),
                    ToolResult {
                        tool_call_id: "call_1".into(),
                        name: "bash".into(),
                        output: "a\n".into(),
                        is_error: false,
                    },
                    4,
                ),
                Message::error("msg_5".into(), "boom".into(), Some("network".into()), 5),
            ],
        }),
        Response::DefinitionGet(DefinitionGetResponse { definition: None }),
        Response::SessionCreate(SessionCreateResponse {
            session: SessionRecord {
                session_id: "sess_2".into(),
                image_id: "img_1".into(),
                container_id: "user-alice".into(),
                title: Some("t".into()),
                created_at: 1,
                updated_at: 1,
            },
            subscriptions: vec!["sess_2".into()],
        }),
        Response::NodeList(NodeListResponse {
            nodes: vec![RuntimeNode {
                node_id: "n1".into(),
                hostname: "h".into(),
                runtime_type: "docker".into(),
                ip_address: None,
                api_endpoint: "unix:///var/run/docker.sock".into(),
                tls: None,
                status: NodeStatus::Offline,
                admin_status: NodeStatus::Online,
                status_message: Some("no heartbeat".into()),
                total_cpu_cores: 2.0,
                total_memory_mb: 2048,
                allocated_cpu_cores: 0.5,
                allocated_memory_mb: 64,
                running_containers: 1,
                in_flight: 0,
                max_containers: 100,
                cached_images: vec![],
                labels: BTreeMap::new(),
                liveness: Liveness::Probe,
                last_heartbeat_at: None,
                registered_at: 1,
            }],
        }),
        Response::TemplateGet(TemplateGetResponse {
            template: Some(Template {
                id: "busybox".into(),
                spec: TemplateSpec::new("Busybox", "busybox:latest"),
                created_at: 1,
                updated_at: 1,
            }),
        }),
        Response::SandboxTerminate(SandboxCreateResponse { sandbox: sandbox() }),
        Response::SandboxExecCancel(SandboxExecCancelResponse {
            execution: execution(),
            cancelled: false,
        }),
        Response::SandboxFileRead(SandboxFileReadResponse {
            path: "a".into(),
            content: "hi".into(),
            encoding: FileEncoding::Utf8,
            size: 2,
        }),
        Response::SandboxFileList(SandboxFileListResponse {
            files: vec![FileEntry {
                name: "l".into(),
                path: "/tmp/l".into(),
                kind: FileKind::Symlink,
                size: 0,
                mode: 0o777,
                modified: 1,
                link_target: Some("/etc".into()),
            }],
        }),
        Response::SchedulerMetrics(SchedulerMetricsResponse {
            metrics: Default::default(),
        }),
        Response::TokenCreate(TokenCreateResponse {
            token: "avm_secret".into(),
            record: token.clone(),
        }),
        Response::TokenRevoke(TokenRevokeResponse {
            record: token,
            revoked: true,
        }),
    ]
}

fn events() -> Vec<Event> {
    let context = Some(EventContext {
        container_id: Some("user-alice".into()),
        image_id: Some("img_1".into()),
        agent_id: Some("agent_1".into()),
        session_id: Some("sess_1".into()),
        turn_id: Some("turn_1".into()),
    });
    let payloads = vec![
        EventPayload::MessageStart {
            message_id: "msg_2".into(),
            model: "m".into(),
        },
        EventPayload::TextDelta { text: "Hel".into() },
        EventPayload::ToolUseStop {
            tool_call_id: "call_1".into(),
            tool_name: "bash".into(),
            input: json!({"command": "ls"}),
        },
        EventPayload::ToolResult {
            tool_call_id: "call_1".into(),
            result: "a".into(),
            is_error: Some(true),
        },
        EventPayload::MessageDelta {
            usage: Some(Usage {
                input_tokens: 1,
                output_tokens: 2,
            }),
        },
        EventPayload::MessageStop { stop_reason: None },
        EventPayload::ConversationResponding {},
        EventPayload::ConversationEnd {
            reason: EndReason::Interrupted,
        },
        EventPayload::ToolExecuting {
            tool_id: "call_1".into(),
            tool_name: "bash".into(),
            input: json!(["any", 1]),
        },
        EventPayload::AssistantMessage(Message::assistant(
            "msg_2".into(),
            "hi".into(),
            1,
            None,
            None,
        )),
        EventPayload::ErrorMessage(Message::error("msg_3".into(), "boom".into(), None, 2)),
        EventPayload::SessionDestroyed {
            session_id: "sess_1".into(),
            image_id: "img_1".into(),
            container_id: "user-alice".into(),
            agent_id: Some("agent_1".into()),
        },
        EventPayload::ConnectionState {
            state: "reconnecting".into(),
            attempt: Some(2),
            error: None,
            url: Some("ws://127.0.0.1:8080/ws".into()),
        },
        EventPayload::SandboxCreated {
            sandbox_id: "sbx_1".into(),
            template_id: "busybox".into(),
            node_id: "n1".into(),
            warm: true,
        },
        EventPayload::SandboxExecOutput {
            sandbox_id: "sbx_1".into(),
            execution_id: "exec_1".into(),
            stream: "stdout".into(),
            data: "hi\n".into(),
        },
        EventPayload::SandboxExecFinished {
            sandbox_id: "sbx_1".into(),
            execution_id: "exec_1".into(),
            status: "timeout".into(),
            exit_code: None,
            error: Some("timed out".into()),
            truncated: false,
            duration_ms: Some(5),
        },
        EventPayload::SystemError {
            message: "nope".into(),
            request_id: Some("r1".into()),
            severity: "error".into(),
            details: Some(json!({"kind": "not_found"})),
        },
    ];
    payloads
        .into_iter()
        .enumerate()
        .map(|(i, p)| Event::new(p, if i % 2 == 0 { context.clone() } else { None }))
        .collect()
}

#[test]
fn real_commands_responses_and_events_validate() {
    let doc = schema();
    let root = root_validator(&doc);
    let table = &doc["x-commands"];

    for command in commands() {
        let value = serde_json::to_value(&command).expect("serializes");
        assert_valid(&root, &value, "command");
        let name = command.type_name().trim_end_matches("_request");
        let request = validator(&doc, name_of(&table[name]["request"]));
        assert_valid(&request, &value["data"], "request data");
    }
    for response in responses() {
        let value = serde_json::to_value(&response).expect("serializes");
        assert_valid(&root, &value, "response");
        let name = response.type_name().trim_end_matches("_response");
        let data = validator(&doc, name_of(&table[name]["response"]));
        assert_valid(&data, &value["data"], "response data");
    }
    let any_event = validator(&doc, "AgentvmEvent");
    for event in events() {
        let value = serde_json::to_value(&event).expect("serializes");
        assert_valid(&root, &value, "event");
        assert_valid(&any_event, &value, "event");
        let this = validator(&doc, name_of(&doc["x-events"][event.type_name()]));
        assert_valid(&this, &value, "event");
    }
}

#[test]
fn wrong_values_are_refused() {
    let doc = schema();
    let root = root_validator(&doc);
    let image_get = validator(&doc, "ImageGetRequest");
    assert!(image_get.is_valid(&json!({"imageId": "img_1"})));
    assert!(!image_get.is_valid(&json!({})), "imageId is required");
    assert!(!image_get.is_valid(&json!({"imageId": 5})));
    // Requests that refuse unknown fields say so in the schema.
    let sandbox_get = validator(&doc, "SandboxGetRequest");
    assert!(!sandbox_get.is_valid(&json!({"sandboxId": "s", "sandboxID": "s"})));
    // A field with a serde default may be left out of a request, not of a response.
    let read = validator(&doc, "SandboxFileReadRequest");
    assert!(read.is_valid(&json!({"sandboxId": "s", "path": "a"})));
    let read = validator(&doc, "SandboxFileReadResponse");
    assert!(!read.is_valid(&json!({"path": "a", "content": "", "size": 0})));
    assert!(!root.is_valid(&json!({"type": "image_get_request", "data": {"imageId": 1}})));
    assert!(!root.is_valid(&json!({"type": "nope_request", "data": {}})));

    let mut event = serde_json::to_value(Event::new(
        EventPayload::TextDelta { text: "a".into() },
        None,
    ))
    .expect("serializes");
    assert!(root.is_valid(&event));
    event["data"] = json!({"text": 1});
    assert!(!root.is_valid(&event), "text_delta data is typed");
    event["data"] = json!({"text": "a"});
    event["source"] = json!("elsewhere");
    assert!(!root.is_valid(&event), "the envelope is typed");
}

#[test]
fn read_and_written_shapes_differ_only_where_serde_says() {
    let doc = schema();
    let defs = doc["$defs"].as_object().expect("$defs");
    // `pidsLimit` has a default: a template request may leave it out, a stored template has it.
    let input = &defs["SecurityPolicyInput"];
    let written = &defs["SecurityPolicy"];
    let required = |s: &Value| -> Vec<String> {
        s["required"]
            .as_array()
            .map(|r| r.iter().map(|v| v.to_string()).collect())
            .unwrap_or_default()
    };
    assert!(required(written).contains(&"\"pidsLimit\"".to_string()));
    assert!(!required(input).contains(&"\"pidsLimit\"".to_string()));
    // Types the same on both sides have one name.
    assert!(!defs.contains_key("ContentPartInput"));
    assert!(!defs.contains_key("DefinitionInput"));
}

#[test]
fn generation_is_deterministic_and_sorted() {
    let a = outputs().expect("generates");
    let b = outputs().expect("generates");
    assert_eq!(a, b);
    let doc = schema();
    let defs: Vec<&String> = doc["$defs"].as_object().expect("$defs").keys().collect();
    let mut sorted = defs.clone();
    sorted.sort();
    assert_eq!(defs, sorted, "definitions are in name order");
    for o in &a {
        assert!(
            o.contents.contains("cargo run -p agentvm-schema"),
            "{} says how it is made",
            o.path
        );
    }
}

#[test]
fn every_type_is_in_both_languages() {
    let out = outputs().expect("generates");
    let python = &out[1].contents;
    let typescript = &out[2].contents;
    let doc = schema();
    for name in doc["$defs"].as_object().expect("$defs").keys() {
        if name == "Command" || name == "Response" {
            continue;
        }
        assert!(
            python.contains(&format!("\nclass {name}(TypedDict):"))
                || python.contains(&format!("\n{name} = TypedDict("))
                || python.contains(&format!("\n{name}: TypeAlias = ")),
            "{name} is in the Python module"
        );
        assert!(
            typescript.contains(&format!("\nexport interface {name} {{"))
                || typescript.contains(&format!("\nexport type {name} =")),
            "{name} is in the TypeScript declarations"
        );
    }
    // A key a class body would mangle takes the functional syntax.
    assert!(python.contains("ImageCreateResponse = TypedDict(\n    \"ImageCreateResponse\""));
    assert!(python.contains("\"__subscriptions\": list[str],"));
    assert!(typescript.contains("  __subscriptions: string[];"));
    for (name, types) in [
        (
            "image_get",
            "{ request: ImageGetRequest; response: ImageGetResponse }",
        ),
        (
            "image_build",
            "{ request: ImageBuildRequest; response: ImageBuildResponse }",
        ),
    ] {
        assert!(
            typescript.contains(&format!("  {name}: {types};")),
            "{name}"
        );
    }
    assert!(python.contains("ImageBuildResponse: TypeAlias = ImageCreateResponse"));
}

#[test]
fn drift_is_found_and_named() {
    let out = outputs().expect("generates");
    let dir = std::env::temp_dir().join(format!("agentvm-schema-{}", std::process::id()));
    for o in &out {
        let path = dir.join(o.path);
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
        std::fs::write(&path, &o.contents).expect("write");
    }
    assert!(drifted(&dir, &out).is_empty());
    std::fs::write(dir.join(SCHEMA_PATH), "{}\n").expect("write");
    assert_eq!(drifted(&dir, &out), vec![SCHEMA_PATH]);
    std::fs::remove_file(dir.join(out[2].path)).expect("remove");
    assert_eq!(drifted(&dir, &out), vec![SCHEMA_PATH, out[2].path]);
    std::fs::remove_dir_all(&dir).expect("clean up");
}

#[test]
fn the_committed_files_are_up_to_date() {
    let out = outputs().expect("generates");
    let stale = drifted(repository_root(), &out);
    assert!(
        stale.is_empty(),
        "{stale:?} differ from what the generator writes: run `cargo run -p agentvm-schema`"
    );
}
