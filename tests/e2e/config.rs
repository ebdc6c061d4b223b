//! (e) configuration validation: `check-config` and `run` reject bad configs with
//! `FILE:LINE:COL: field `table.key`: message`, and accept valid ones.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::harness::*;

const LIMIT: Duration = Duration::from_secs(20);

// No `socket_netns` variant: its config is the socket one, and neither `check-config` nor a
// rejected `run` touches the network.
e2e_tests!(
    [socket = Socket, xdp_skb = XdpSkb, xdp_driver = XdpDriver]
    {
        bad_configs_rejected_with_location,
        valid_configs_pass_check_config,
    }
);

/// A valid config for `fx`'s backend, one entry per line (line N of the file is
/// `lines[N - 1]`). The XDP targets append their `[xdp]` table after line 21.
fn base_lines(fx: &Fixture) -> Vec<String> {
    let listen: Vec<String> = fx.listen_addrs().iter().map(|a| toml_str(a)).collect();
    let mut lines: Vec<String> = vec![
        "[server]".into(),                                                   // 1
        format!("listen = [{}]", listen.join(", ")),                         // 2
        format!("backend = {}", toml_str(fx.target.config_backend())),       // 3
        "drain_timeout_ms = 1000".into(),                                    // 4
        "".into(),                                                           // 5
        "[tls]".into(),                                                      // 6
        format!("cert = {}", toml_str(&fx.cert_path.display().to_string())), // 7
        format!("key = {}", toml_str(&fx.key_path.display().to_string())),   // 8
        "".into(),                                                           // 9
        "[transport]".into(),                                                // 10
        "retry = false".into(),                                              // 11
        "congestion = \"cubic\"".into(),                                     // 12
        "idle_timeout_ms = 30000".into(),                                    // 13
        "initial_mtu = 1200".into(),                                         // 14
        "".into(),                                                           // 15
        "[apps.hq]".into(),                                                  // 16
        "alpn = [\"hq-interop\"]".into(),                                    // 17
        format!("root = {}", toml_str(&fx.root.display().to_string())),      // 18
        "".into(),                                                           // 19
        "[apps.perf]".into(),                                                // 20
        "alpn = [\"perf\"]".into(),                                          // 21
    ];
    if let Some(x) = fx.xdp_section() {
        lines.extend([
            "".into(),
            "[xdp]".into(),
            format!("interface = {}", toml_str(&x.interface)),
            format!("attach = {}", toml_str(&x.attach)),
        ]);
    }
    lines
}

enum Edit {
    /// Replace line N (1-based).
    Replace(usize, &'static str),
    /// Insert lines so that the first one becomes line N.
    Insert(usize, &'static [&'static str]),
    /// Remove line N.
    Remove(usize),
}

struct Case {
    name: &'static str,
    edit: Edit,
    /// Line the error must point at (None: not checked).
    line: Option<usize>,
    /// Text that must appear in the message (the field's name), if any.
    field: Option<&'static str>,
}

fn cases() -> Vec<Case> {
    use Edit::*;
    vec![
        Case {
            name: "unknown field in [transport]",
            edit: Insert(12, &["retrry = true"]),
            line: Some(12),
            field: Some("transport.retrry"),
        },
        Case {
            name: "unknown field in [server]",
            edit: Insert(4, &["listne = [\"127.0.0.1:0\"]"]),
            line: Some(4),
            field: Some("server.listne"),
        },
        Case {
            name: "unknown app table",
            edit: Insert(22, &["", "[apps.gopher]", "alpn = [\"gopher\"]"]),
            line: Some(23),
            field: Some("apps.gopher"),
        },
        Case {
            name: "wrong type: string for integer",
            edit: Replace(13, "idle_timeout_ms = \"30s\""),
            line: Some(13),
            field: Some("transport.idle_timeout_ms"),
        },
        Case {
            name: "wrong type: string for bool",
            edit: Replace(11, "retry = \"yes\""),
            line: Some(11),
            field: Some("transport.retry"),
        },
        Case {
            name: "wrong type: string for array",
            edit: Replace(2, "listen = \"127.0.0.1:0\""),
            line: Some(2),
            field: Some("server.listen"),
        },
        Case {
            name: "wrong type: negative integer",
            edit: Replace(4, "drain_timeout_ms = -5"),
            line: Some(4),
            field: Some("server.drain_timeout_ms"),
        },
        Case {
            name: "bad value: congestion = \"fast\"",
            edit: Replace(12, "congestion = \"fast\""),
            line: Some(12),
            field: Some("transport.congestion"),
        },
        Case {
            name: "bad value: unknown backend",
            edit: Replace(3, "backend = \"warp-drive\""),
            line: Some(3),
            field: Some("server.backend"),
        },
        Case {
            name: "bad value: unparsable listen address",
            edit: Replace(2, "listen = [\"not an address\"]"),
            line: Some(2),
            field: Some("server.listen"),
        },
        Case {
            name: "bad value: initial_mtu below 1200",
            edit: Replace(14, "initial_mtu = 100"),
            line: Some(14),
            field: Some("transport.initial_mtu"),
        },
        Case {
            name: "bad value: short stateless_reset_key",
            edit: Insert(12, &["stateless_reset_key = \"abcd\""]),
            line: Some(12),
            field: Some("transport.stateless_reset_key"),
        },
        Case {
            name: "TOML syntax error",
            edit: Replace(11, "retry = "),
            line: Some(11),
            field: None,
        },
        Case {
            name: "missing required listen",
            edit: Remove(2),
            line: None,
            field: Some("listen"),
        },
    ]
}

fn apply(mut lines: Vec<String>, edit: &Edit) -> String {
    match edit {
        Edit::Replace(n, s) => lines[n - 1] = s.to_string(),
        Edit::Insert(n, new) => {
            for (i, s) in new.iter().enumerate() {
                lines.insert(n - 1 + i, s.to_string());
            }
        }
        Edit::Remove(n) => {
            lines.remove(n - 1);
        }
    }
    let mut s = lines.join("\n");
    s.push('\n');
    s
}

/// Checks one command's result against a case; returns a description of what's wrong.
fn judge(
    cmd: &str,
    path: &Path,
    case: &Case,
    status: std::process::ExitStatus,
    stderr: &str,
) -> Option<String> {
    let mut problems = Vec::new();
    if status.success() {
        problems.push("exited with status 0".to_string());
    }
    if let Some(line) = case.line {
        let want = format!("{}:{line}:", path.display());
        if !stderr.contains(&want) {
            problems.push(format!("no `{want}` in stderr"));
        }
    } else if !stderr.contains(&path.display().to_string()) {
        problems.push("file path not in stderr".to_string());
    }
    if let Some(field) = case.field {
        if !stderr.contains(field) {
            problems.push(format!("field `{field}` not in stderr"));
        }
    }
    if problems.is_empty() {
        None
    } else {
        Some(format!(
            "[{}] `quixd {cmd}`: {}\n    stderr: {}",
            case.name,
            problems.join("; "),
            stderr.trim().replace('\n', "\n            ")
        ))
    }
}

async fn bad_configs_rejected_with_location(t: Backend) {
    let fx = Fixture::new(t);
    bounded(Duration::from_secs(180), async {
        // Sanity: the unmodified base config is valid, so each failure below is the edit's.
        let base = fx.write_config_text(&(base_lines(&fx).join("\n") + "\n"));
        let (st, err, _) = fx
            .run_quixd(&[OsStr::new("check-config"), base.as_os_str()], LIMIT)
            .await;
        assert!(st.success(), "base config rejected ({st}): {err}");

        let mut failures = Vec::new();
        for case in cases() {
            let path = fx.write_config_text(&apply(base_lines(&fx), &case.edit));
            let (st, err, _) = fx
                .run_quixd(&[OsStr::new("check-config"), path.as_os_str()], LIMIT)
                .await;
            failures.extend(judge("check-config", &path, &case, st, &err));

            let (st, err, _) = fx
                .run_quixd(
                    &[OsStr::new("run"), OsStr::new("--config"), path.as_os_str()],
                    LIMIT,
                )
                .await;
            failures.extend(judge("run --config", &path, &case, st, &err));
        }
        assert!(
            failures.is_empty(),
            "{} problem(s):\n{}",
            failures.len(),
            failures.join("\n")
        );
    })
    .await;
}

async fn valid_configs_pass_check_config(t: Backend) {
    let fx = Fixture::new(t);
    let example: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/quixd.toml");
    let harness_cfg = fx.write_config(&fx.config());
    let mut dev = fx
        .config()
        .transport("retry", "true")
        .transport("congestion", "\"bbr\"")
        .transport(
            "stateless_reset_key",
            "\"000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\"",
        );
    dev.tls = TlsSetup::DevCert;
    let dev_cfg = fx.write_config(&dev);
    let newreno = fx.write_config(&fx.config().transport("congestion", "\"new_reno\""));

    bounded(Duration::from_secs(60), async {
        for path in [&example, &harness_cfg, &dev_cfg, &newreno] {
            let (st, err, out) = fx
                .run_quixd(&[OsStr::new("check-config"), path.as_os_str()], LIMIT)
                .await;
            assert!(
                st.success(),
                "check-config {} failed ({st}):\nstderr: {err}\nstdout: {out}\nconfig:\n{}",
                path.display(),
                std::fs::read_to_string(path).unwrap_or_default()
            );
        }
        // A file that does not exist is an error too.
        let missing = fx.dir.path().join("nope.toml");
        let (st, err, _) = fx
            .run_quixd(&[OsStr::new("check-config"), missing.as_os_str()], LIMIT)
            .await;
        assert!(
            !st.success(),
            "check-config on a missing file succeeded: {err}"
        );
    })
    .await;
}
