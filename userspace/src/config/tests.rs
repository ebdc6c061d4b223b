use std::path::Path;

use super::*;
use crate::datapath::uring::UringConfig;

const FILE: &str = "/etc/quixd/test.toml";

fn parse(src: &str) -> Result<Config, ConfigError> {
    Config::parse(Path::new(FILE), src)
}

/// A valid minimal config whose document root exists.
fn minimal() -> String {
    format!(
        // A literal string: Windows paths have backslashes, which basic strings would escape.
        "[server]\nlisten = [\"127.0.0.1:4433\"]\n\n[apps.hq]\nroot = '{}'\n",
        std::env::temp_dir().display()
    )
}

fn expect_error(src: &str, line: usize, field: &str, needle: &str) {
    let err = parse(src).expect_err("config must be rejected");
    let text = err.to_string();
    assert_eq!(
        err.location().map(|l| l.line),
        Some(line),
        "line in: {text}"
    );
    assert_eq!(err.field(), Some(field), "field in: {text}");
    assert!(
        text.starts_with(&format!("{FILE}:{line}:")),
        "file:line prefix in: {text}"
    );
    assert!(
        text.contains(&format!("`{field}`")),
        "field named in: {text}"
    );
    assert!(text.contains(needle), "`{needle}` in: {text}");
}

#[test]
fn example_config_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/quixd.toml");
    let config = Config::load(&path).unwrap();
    assert_eq!(config.server.listen.len(), 2);
    assert_eq!(config.server.backend, Backend::Socket);
    let hq = config.apps.hq.unwrap();
    assert_eq!(hq.alpn, ["hq-interop", "hq-29"]);
    assert!(
        hq.root.ends_with("config/www"),
        "root is relative to the file: {hq:?}"
    );
    assert_eq!(config.transport.congestion, Congestion::Cubic);
}

#[test]
fn defaults_fill_what_is_left_out() {
    let config = parse(&minimal()).unwrap();
    let t = config.transport;
    assert!(!t.retry && t.resumption && t.zero_rtt);
    assert_eq!((t.initial_mtu, t.max_udp_payload_size), (1200, 1452));
    assert_eq!(config.server.drain_timeout_ms, 5000);
    assert_eq!(config.tls.dev_cert_names, ["localhost"]);
    assert!(config.apps.perf.is_none());
}

#[test]
fn full_transport_section_parses() {
    let src = minimal()
        + "[transport]\nretry = true\ncongestion = \"new_reno\"\nstateless_reset_key = \""
        + &"ab".repeat(32)
        + "\"\ntoken_key = \""
        + &"CD".repeat(32)
        + "\"\nidle_timeout_ms = 1000\n[apps.perf]\nalpn = [\"perf\"]\n";
    let config = parse(&src).unwrap();
    assert!(config.transport.retry);
    assert_eq!(config.transport.congestion, Congestion::NewReno);
    assert_eq!(
        config.transport.stateless_reset_key,
        Some(SecretKey([0xab; 32]))
    );
    assert_eq!(config.transport.token_key, Some(SecretKey([0xcd; 32])));
    assert_eq!(config.apps.perf.unwrap().alpn, ["perf"]);
}

#[test]
fn unknown_field_is_named_with_its_line() {
    let src = minimal() + "[transport]\nretry = true\nretries = 3\n";
    expect_error(&src, 8, "transport.retries", "unknown field `retries`");
}

#[test]
fn wrong_type_is_named_with_its_line() {
    let src = minimal() + "[transport]\n\nidle_timeout_ms = \"30s\"\n";
    expect_error(&src, 8, "transport.idle_timeout_ms", "invalid type");
}

#[test]
fn bad_enum_value_is_named() {
    let src = minimal() + "[transport]\ncongestion = \"fast\"\n";
    expect_error(&src, 7, "transport.congestion", "unknown variant `fast`");
}

#[test]
fn bad_address_is_named() {
    let src = "[server]\nlisten = [\"127.0.0.1:4433\", \"nowhere\"]\n";
    expect_error(src, 2, "server.listen", "invalid socket address");
}

#[test]
fn missing_required_field_is_named() {
    let src = "[server]\nbusy_poll = true\n";
    expect_error(src, 1, "server.listen", "missing field `listen`");
}

#[test]
fn semantic_errors_point_at_the_field() {
    let src = minimal() + "[transport]\ninitial_mtu = 1500\nmax_udp_payload_size = 1400\n";
    expect_error(
        &src,
        7,
        "transport.initial_mtu",
        "outside 1200..=max_udp_payload_size",
    );
    let src = minimal() + "[transport]\nresumption = false\n";
    expect_error(&src, 6, "transport.zero_rtt", "needs `resumption = true`");
    let src = minimal() + "[transport]\nstateless_reset_key = \"abc\"\n";
    expect_error(&src, 7, "transport.stateless_reset_key", "64 hex digits");
    let src = "[server]\nlisten = [\"127.0.0.1:1\"]\n[apps.hq]\nroot = \"/does/not/exist\"\n";
    expect_error(src, 4, "apps.hq.root", "is not a directory");
    let src = minimal() + "[tls]\ncert = \"/does/not/exist.pem\"\n";
    expect_error(&src, 7, "tls.cert", "needs `tls.key` too");
    let src = minimal() + "[apps.echo]\nalpn = [\"hq-interop\"]\n";
    expect_error(&src, 7, "apps.echo.alpn", "served by two applications");
    let src = "[server]\nlisten = []\n[apps.echo]\nalpn = [\"echo\"]\n";
    expect_error(src, 2, "server.listen", "at least one address");
}

#[test]
fn syntax_error_has_a_line() {
    let src = minimal() + "[transport\nretry = true\n";
    let err = parse(&src).unwrap_err();
    assert_eq!(err.location().map(|l| l.line), Some(6), "{err}");
}

#[test]
fn every_backend_name_parses() {
    for (name, want) in [
        ("auto", Backend::Auto),
        ("io_uring", Backend::IoUring),
        ("socket", Backend::Socket),
    ] {
        let src = minimal().replacen(
            "[server]\n",
            &format!("[server]\nbackend = \"{name}\"\n"),
            1,
        );
        let config = parse(&src).unwrap();
        assert_eq!(config.server.backend, want);
        assert_eq!(want.as_str(), name);
    }
    // Left out: the socket backend.
    assert_eq!(parse(&minimal()).unwrap().server.backend, Backend::Socket);
    let src = minimal().replacen("[server]\n", "[server]\nbackend = \"iouring\"\n", 1);
    expect_error(&src, 2, "server.backend", "unknown variant `iouring`");
    // `auto` needs no [xdp] table; `xdp` does.
    let src = minimal().replacen("[server]\n", "[server]\nbackend = \"xdp\"\n", 1);
    expect_error(&src, 2, "server.backend", "needs an [xdp] table");
}

#[test]
fn io_uring_table_defaults_and_values() {
    let config = parse(&minimal()).unwrap();
    assert_eq!(config.io_uring, UringConfig::default());
    assert_eq!(
        (config.io_uring.buffers, config.io_uring.buffer_size),
        (128, 65536)
    );
    assert!(!config.io_uring.send_zc, "zero-copy sends are opt-in");
    let src = minimal() + "[io_uring]\nbuffers = 1024\nbuffer_size = 2048\nsend_zc = true\n";
    let config = parse(&src).unwrap();
    assert_eq!(
        config.io_uring,
        UringConfig {
            buffers: 1024,
            buffer_size: 2048,
            send_zc: true
        }
    );
}

#[test]
fn io_uring_table_errors_point_at_the_field() {
    let src = minimal() + "[io_uring]\nbuffers = 100\n";
    expect_error(
        &src,
        7,
        "io_uring.buffers",
        "not a power of two in 8..=32768",
    );
    let src = minimal() + "[io_uring]\nbuffers = 65536\n";
    expect_error(&src, 7, "io_uring.buffers", "not a power of two");
    let src = minimal() + "[io_uring]\nsend_zc = true\nbuffer_size = 1500\n";
    expect_error(&src, 8, "io_uring.buffer_size", "outside 2048..=65536");
    let src = minimal() + "[io_uring]\nbuffer_size = 70000\n";
    expect_error(&src, 7, "io_uring.buffer_size", "outside 2048..=65536");
    let src = minimal() + "[io_uring]\nsqpoll = true\n";
    expect_error(&src, 7, "io_uring.sqpoll", "unknown field `sqpoll`");
}

#[test]
fn example_config_documents_io_uring() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/quixd.toml");
    let config = Config::load(&path).unwrap();
    assert_eq!(
        config.io_uring,
        UringConfig::default(),
        "the example shows the defaults"
    );
}

#[test]
fn workers_take_auto_or_a_count() {
    let with = |value: &str| {
        minimal().replace(
            "[server]\n",
            &format!("[server]\nworkers = {value}\ncpus = [1, 0]\n"),
        )
    };
    assert_eq!(parse(&minimal()).unwrap().server.workers, Workers::Count(1));
    let config = parse(&with("\"auto\"")).unwrap();
    assert_eq!(config.server.workers, Workers::Auto);
    assert_eq!(config.server.cpus, [1, 0]);
    assert_eq!(parse(&with("4")).unwrap().server.workers, Workers::Count(4));
    for bad in ["0", "-1", "\"many\"", "2.5"] {
        expect_error(&with(bad), 2, "server.workers", "number of workers");
    }
}

#[test]
fn server_id_is_hex_and_short() {
    let with =
        |value: &str| minimal().replace("[server]\n", &format!("[server]\nserver_id = {value}\n"));
    assert_eq!(
        parse(&minimal()).unwrap().server.server_id,
        ServerId(vec![])
    );
    assert_eq!(
        parse(&with("\"0a0B\"")).unwrap().server.server_id,
        ServerId(vec![0x0a, 0x0b])
    );
    expect_error(&with("\"abc\""), 2, "server.server_id", "even number");
    expect_error(&with("\"zz\""), 2, "server.server_id", "not a hex digit");
    expect_error(
        &with("\"000102030405060708\""),
        2,
        "server.server_id",
        "at most 8 bytes",
    );
}

#[test]
fn cid_key_is_16_bytes_of_hex() {
    let with =
        |value: &str| minimal().replace("[server]\n", &format!("[server]\ncid_key = {value}\n"));
    assert_eq!(parse(&minimal()).unwrap().server.cid_key, None);
    let config = parse(&with("\"000102030405060708090a0b0c0d0E0F\"")).unwrap();
    assert_eq!(
        config.server.cid_key,
        Some(CidKey(std::array::from_fn(|i| i as u8)))
    );
    assert_eq!(format!("{:?}", config.server.cid_key), "Some(CidKey(..))");
    expect_error(
        &with("\"0001\""),
        2,
        "server.cid_key",
        "expected 32 hex digits, found 4",
    );
    expect_error(
        &with("\"000102030405060708090a0b0c0d0e0f10\""),
        2,
        "server.cid_key",
        "expected 32 hex digits, found 34",
    );
    expect_error(
        &with("\"000102030405060708090a0b0c0d0e0g\""),
        2,
        "server.cid_key",
        "`g` is not a hex digit",
    );
    expect_error(&with("16"), 2, "server.cid_key", "string");
    // The longest server id still leaves a nonce (8 + 1 bytes, 7 of nonce in one block); a
    // longer one is refused whether or not a key is set.
    let longest = with("\"000102030405060708090a0b0c0d0e0f\"")
        .replace("[server]\n", "[server]\nserver_id = \"0001020304050607\"\n");
    assert!(parse(&longest).unwrap().server.cid_key.is_some());
    expect_error(
        &longest.replace("0001020304050607\"", "000102030405060708\""),
        2,
        "server.server_id",
        "at most 8 bytes",
    );
}

#[test]
fn group_needs_a_user() {
    let src = minimal().replace("[server]\n", "[server]\ngroup = \"nogroup\"\n");
    expect_error(&src, 2, "server.group", "needs `server.user`");
    let src = minimal().replace("[server]\n", "[server]\nuser = \"nobody\"\n");
    assert_eq!(parse(&src).unwrap().server.user.as_deref(), Some("nobody"));
}

#[test]
fn h3_table_defaults_and_errors() {
    let root = std::env::temp_dir().display().to_string();
    let src = minimal() + &format!("[apps.h3]\nroot = '{root}'\n");
    let h3 = parse(&src).unwrap().apps.h3.unwrap();
    assert_eq!(h3.alpn, ["h3"]);
    assert_eq!(h3.max_field_section_size, 16 * 1024);
    let src = minimal() + &format!("[apps.h3]\nroot = '{root}'\nmax_field_section_size = 10\n");
    expect_error(
        &src,
        8,
        "apps.h3.max_field_section_size",
        "outside 64..=1048576",
    );
    let src = minimal() + "[apps.h3]\nroot = \"/does/not/exist\"\n";
    expect_error(&src, 7, "apps.h3.root", "is not a directory");
    let src = minimal() + &format!("[apps.h3]\nroot = '{root}'\nalpn = [\"hq-29\"]\n");
    expect_error(&src, 8, "apps.h3.alpn", "served by two applications");
}

#[test]
fn file_readers_are_bounded() {
    assert_eq!(parse(&minimal()).unwrap().apps.file_readers, None);
    let src = minimal().replace("[apps.hq]\n", "[apps]\nfile_readers = 8\n\n[apps.hq]\n");
    assert_eq!(parse(&src).unwrap().apps.file_readers, Some(8));
    let src = minimal().replace("[apps.hq]\n", "[apps]\nfile_readers = 0\n\n[apps.hq]\n");
    expect_error(&src, 5, "apps.file_readers", "must be 1 to 256");
}

#[test]
fn example_config_serves_h3() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/quixd.toml");
    let h3 = Config::load(&path).unwrap().apps.h3.unwrap();
    assert_eq!(h3.alpn, ["h3"]);
    assert!(h3.root.ends_with("config/www"), "{h3:?}");
}

/// Fuzzing found `'' = 2` named as the field `` (nothing): keys that are not bare are quoted.
#[test]
fn keys_that_are_not_bare_are_named_quoted() {
    let err = parse("''=2").unwrap_err();
    assert_eq!(err.field(), Some("\"\""), "{err}");
    assert!(
        err.to_string()
            .starts_with(&format!("{FILE}:1:1: field `\"\"`: ")),
        "{err}"
    );
    let err = parse(&(minimal() + "[server.\"a.b\"]\n")).unwrap_err();
    assert_eq!(err.field(), Some("server.\"a.b\""), "{err}");
}
