//! The sandbox exec agent on real Docker: started by a sandbox's readiness check, it serves
//! the sandbox's execs with what Docker exec gives a command (user, environment, working
//! directory, separate streams, exit codes, closed stdin), the timeout kills a process group
//! through it, and an agent killed from inside the sandbox is started anew by the next exec.

use agentvm::scheduler::{
    ExecRequest, ExecStatus, NodeRegistration, Sandbox, SandboxRequest, Scheduler,
};
use agentvm_e2e::docker::*;
use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, StartExecResults};
use futures::StreamExt;
use std::time::Duration;

/// The parent of the shell an exec runs: the agent, or Docker's runtime.
const PARENT: &str = "tr '\\0' ' ' < /proc/$PPID/cmdline";

/// The environment a command sees, without what differs per exec.
const ENV: &str = "env | grep -v -e '^AGENTVM_EXEC_ID=' -e '^_=' | sort";

async fn served_by_agent(s: &Scheduler, id: &str) -> bool {
    let x = s
        .exec_collect(id, ExecRequest::shell(PARENT))
        .await
        .unwrap();
    x.stdout.contains("/.agentvm/exec-agent")
}

/// `script`'s stdout through Docker's own exec, as the scheduler used to run every command.
async fn docker_exec(sandbox: &Sandbox, script: &str) -> String {
    let d = local().await;
    let container = sandbox.docker_container_id.clone().unwrap();
    let exec = d
        .create_exec(
            &container,
            CreateExecOptions::<String> {
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                cmd: Some(vec!["/bin/sh".into(), "-c".into(), script.into()]),
                user: Some(sandbox.user.clone()),
                working_dir: Some(sandbox.workdir.clone()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let StartExecResults::Attached { mut output, .. } = d.start_exec(&exec.id, None).await.unwrap()
    else {
        panic!("detached");
    };
    let mut out = String::new();
    while let Some(chunk) = output.next().await {
        if let LogOutput::StdOut { message } = chunk.unwrap() {
            out.push_str(&String::from_utf8_lossy(&message));
        }
    }
    out
}

#[tokio::test]
async fn the_agent_serves_execs_as_docker_exec_does() {
    if !require_docker().await {
        return;
    }
    let s = local_scheduler(fast_config()).await;
    s.create_template("busybox", busybox_spec()).await.unwrap();
    let sandbox = s
        .create_sandbox(SandboxRequest::new("busybox"))
        .await
        .unwrap();
    // On this machine's daemon the agent is bind-mounted, read-only.
    let x = s
        .exec_collect(
            &sandbox.id,
            ExecRequest::shell("grep exec-agent /proc/mounts"),
        )
        .await
        .unwrap();
    assert!(
        x.stdout.contains("/.agentvm/exec-agent") && x.stdout.contains(" ro,"),
        "{x:?}"
    );
    let probe = format!("id; pwd; {ENV}");
    assert!(
        served_by_agent(&s, &sandbox.id).await,
        "the first exec after creation"
    );
    let by_agent = s
        .exec_collect(&sandbox.id, ExecRequest::shell(probe.clone()))
        .await
        .unwrap();
    assert_eq!(by_agent.status, ExecStatus::Completed, "{by_agent:?}");
    let by_docker = docker_exec(&sandbox, &probe).await;
    assert_eq!(
        by_agent.stdout, by_docker,
        "the agent's exec differs from Docker's"
    );
    assert!(
        by_agent.stdout.contains("/workspace\n"),
        "{}",
        by_agent.stdout
    );
    assert!(!by_agent.stdout.contains("uid=0("), "{}", by_agent.stdout);

    // Environment, working directory, both streams and the exit code.
    let mut req = ExecRequest::shell("echo \"$GREETING\"; pwd; echo oops >&2; cat; exit 3");
    req.env.insert("GREETING".into(), "hello there".into());
    req.workdir = Some("/tmp".into());
    let x = s.exec_collect(&sandbox.id, req).await.unwrap();
    assert_eq!(
        (x.stdout.as_str(), x.stderr.as_str(), x.exit_code, x.status),
        ("hello there\n/tmp\n", "oops\n", Some(3), ExecStatus::Failed),
        "{x:?}"
    );
    // A signal's exit code is 128 + the signal, as Docker reports it.
    let x = s
        .exec_collect(&sandbox.id, ExecRequest::shell("kill -9 $$"))
        .await
        .unwrap();
    assert_eq!(x.exit_code, Some(137), "{x:?}");
    // A command that does not exist, and a working directory that does not.
    let missing = ExecRequest {
        command: vec!["/no/such/program".into()],
        ..Default::default()
    };
    let x = s.exec_collect(&sandbox.id, missing).await.unwrap();
    assert_eq!(
        (x.exit_code, x.status),
        (Some(127), ExecStatus::Failed),
        "{x:?}"
    );
    assert!(x.stderr.contains("/no/such/program"), "{x:?}");
    let mut nowhere = ExecRequest::shell("true");
    nowhere.workdir = Some("/no/such/dir".into());
    let x = s.exec_collect(&sandbox.id, nowhere).await.unwrap();
    assert_eq!(x.status, ExecStatus::Failed, "{x:?}");

    // Large output arrives whole and in order.
    let x = s
        .exec_collect(&sandbox.id, ExecRequest::shell("seq 1 50000"))
        .await
        .unwrap();
    let expected: String = (1..=50000).map(|n| format!("{n}\n")).collect();
    assert!(
        x.stdout == expected,
        "{} bytes of {}",
        x.stdout.len(),
        expected.len()
    );

    // Execs at once, each with its own output.
    let runs = futures::future::join_all((0..8).map(|n| {
        s.exec_collect(
            &sandbox.id,
            ExecRequest::shell(format!("sleep 0.{n}; echo {n}")),
        )
    }))
    .await;
    for (n, x) in runs.into_iter().enumerate() {
        assert_eq!(x.unwrap().stdout, format!("{n}\n"));
    }

    // The timeout kills the process group and what it left in the background.
    let x = s
        .exec_collect(
            &sandbox.id,
            ExecRequest::shell("sleep 100 & sleep 101").timeout(Duration::from_secs(1)),
        )
        .await
        .unwrap();
    assert_eq!(x.status, ExecStatus::Timeout, "{x:?}");
    let ps = s
        .exec_collect(&sandbox.id, ExecRequest::shell("ps -o pid,args"))
        .await
        .unwrap();
    assert!(
        !ps.stdout.contains("sleep 10"),
        "left behind:\n{}",
        ps.stdout
    );
    assert!(ps.stdout.contains("/.agentvm/exec-agent"), "{}", ps.stdout);

    // An endless flood the timeout ends: its killer runs through the same agent, behind the
    // flood's output, while the flood's output is still being read.
    let flood = ExecRequest {
        max_output_bytes: Some(1000),
        ..ExecRequest::shell("yes").timeout(Duration::from_secs(1))
    };
    let x = s.exec_collect(&sandbox.id, flood).await.unwrap();
    assert_eq!(
        (x.status, x.truncated, x.stdout.len()),
        (ExecStatus::Timeout, true, 1000)
    );
    let x = s
        .exec_collect(&sandbox.id, ExecRequest::shell("echo still here"))
        .await
        .unwrap();
    assert_eq!(x.stdout, "still here\n");

    // The agent runs as the sandbox's user, who cannot replace it.
    let x = s
        .exec_collect(
            &sandbox.id,
            ExecRequest::shell("echo x > /.agentvm/exec-agent || echo refused"),
        )
        .await
        .unwrap();
    assert!(x.stdout.contains("refused"), "{x:?}");

    // Killed from inside, mid-exec: that exec ends as crashed, and the next one starts a new
    // agent and runs through it.
    let x = s
        .exec_collect(
            &sandbox.id,
            ExecRequest::shell("kill -9 $PPID; sleep 1; echo late"),
        )
        .await
        .unwrap();
    assert_eq!(x.status, ExecStatus::Crashed, "{x:?}");
    assert!(
        x.error.as_deref().unwrap_or("").contains("exec agent"),
        "{x:?}"
    );
    let x = s
        .exec_collect(&sandbox.id, ExecRequest::shell("echo after"))
        .await
        .unwrap();
    assert_eq!(
        (x.stdout.as_str(), x.status),
        ("after\n", ExecStatus::Completed)
    );
    assert!(served_by_agent(&s, &sandbox.id).await);
    s.terminate_sandbox(&sandbox.id).await.unwrap();
}

#[tokio::test]
async fn a_read_only_root_gets_the_agent_too() {
    if !require_docker().await {
        return;
    }
    let s = local_scheduler(fast_config()).await;
    let mut spec = busybox_spec();
    spec.security.read_only_root = true;
    s.create_template("ro", spec).await.unwrap();
    let sandbox = s.create_sandbox(SandboxRequest::new("ro")).await.unwrap();
    assert!(served_by_agent(&s, &sandbox.id).await);
    let x = s
        .exec_collect(
            &sandbox.id,
            ExecRequest::shell("touch /x || echo read-only"),
        )
        .await
        .unwrap();
    assert!(x.stdout.contains("read-only"), "{x:?}");
    s.terminate_sandbox(&sandbox.id).await.unwrap();
}

#[tokio::test]
async fn on_a_daemon_over_tcp_the_agent_is_copied_in() {
    if !require_docker().await {
        return;
    }
    let second = SecondDaemon::start().await;
    let s = Scheduler::builder()
        .config(fast_config())
        .open()
        .await
        .unwrap();
    let mut reg = NodeRegistration::new("tcp", second.tcp_endpoint.clone());
    reg.tls = Some(second.tls.clone());
    reg.total_cpu_cores = Some(4.0);
    reg.total_memory_mb = Some(8192);
    s.register_node(reg).await.unwrap();
    s.create_template("busybox", busybox_spec()).await.unwrap();
    let sandbox = s
        .create_sandbox(SandboxRequest::new("busybox"))
        .await
        .unwrap();
    assert!(served_by_agent(&s, &sandbox.id).await);
    // Copied, not mounted: a root-owned file the sandbox's user can run but not change.
    let x = s
        .exec_collect(
            &sandbox.id,
            ExecRequest::shell(
                "grep -c exec-agent /proc/mounts; stat -c '%U %a' /.agentvm/exec-agent; \
                 echo x >> /.agentvm/exec-agent || echo refused",
            ),
        )
        .await
        .unwrap();
    assert_eq!(x.stdout, "0\nroot 755\nrefused\n", "{x:?}");
    s.terminate_sandbox(&sandbox.id).await.unwrap();
}
