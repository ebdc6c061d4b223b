//! `quixd`: the QUIC server daemon.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use quixd::config::Config;
use quixd::daemon::Daemon;

#[derive(Parser)]
#[command(version, about = "QUIC server datapath on quinn-proto")]
struct Cli {
    /// Log filter: error, warn, info, debug, trace, or a tracing directive
    /// such as "quixd=debug,quinn_proto=info".
    #[arg(long, global = true, default_value = "info")]
    log_level: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve QUIC as configured until SIGINT or SIGTERM; SIGHUP reloads the certificate.
    Run {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Check a config file and exit: 0 when valid, 1 with the error otherwise.
    CheckConfig { file: PathBuf },
    /// Show what the running daemon is doing, from its metrics endpoint (`[metrics] listen`
    /// in its config, or --metrics).
    Status {
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// The metrics endpoint's address (instead of reading it from the config).
        #[arg(long)]
        metrics: Option<std::net::SocketAddr>,
    },
    /// Echo raw UDP datagrams back to their senders through the configured backend, with no
    /// QUIC: tests and measures the datapath alone. Runs until SIGINT or SIGTERM.
    UdpEcho {
        #[arg(long, short)]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = init_logs(&cli.log_level) {
        eprintln!("quixd: {e:#}");
        return ExitCode::from(2);
    }
    let result = match cli.command {
        Command::Run { config } => run(&config, Mode::Quic),
        Command::UdpEcho { config } => run(&config, Mode::UdpEcho),
        Command::Status { config, metrics } => status(config.as_deref(), metrics),
        Command::CheckConfig { file } => Config::load(&file)
            .map(|_| println!("{}: ok", file.display()))
            .map_err(Into::into),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("quixd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logs(level: &str) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .with_context(|| format!("invalid --log-level `{level}`"))?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    Ok(())
}

fn status(
    config: Option<&std::path::Path>,
    metrics: Option<std::net::SocketAddr>,
) -> anyhow::Result<()> {
    let addr = match (metrics, config) {
        (Some(addr), _) => addr,
        (None, Some(path)) => {
            let config = Config::load(path)?;
            let listen = config.metrics.map(|m| m.listen).with_context(|| {
                format!(
                    "{} has no [metrics] table: `quixd status` reads the metrics endpoint",
                    path.display()
                )
            })?;
            if listen.port() == 0 {
                anyhow::bail!(
                    "metrics.listen in {} has port 0: pass the address the daemon logged \
                     (`metrics served on`) with --metrics",
                    path.display()
                );
            }
            // A wildcard listener is reached on loopback.
            match listen.ip() {
                ip if ip.is_unspecified() && ip.is_ipv4() => {
                    std::net::SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), listen.port())
                }
                ip if ip.is_unspecified() => {
                    std::net::SocketAddr::new(std::net::Ipv6Addr::LOCALHOST.into(), listen.port())
                }
                _ => listen,
            }
        }
        (None, None) => anyhow::bail!("give --config FILE or --metrics ADDR"),
    };
    print!("{}", quixd::status::summarize(&quixd::status::fetch(addr)?));
    Ok(())
}

enum Mode {
    Quic,
    UdpEcho,
}

fn run(config_path: &std::path::Path, mode: Mode) -> anyhow::Result<()> {
    let config = Config::load(config_path)?;
    let stop = Arc::new(AtomicBool::new(false));
    #[cfg(not(windows))]
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // A second signal while draining exits at once.
        signal_hook::flag::register_conditional_shutdown(signal, 1, stop.clone())
            .context("installing signal handlers")?;
        signal_hook::flag::register(signal, stop.clone()).context("installing signal handlers")?;
    }
    #[cfg(windows)]
    console_ctrl::install(stop.clone()).context("installing the console control handler")?;
    // SIGHUP: read the certificate and key again (registered now, so that a SIGHUP during
    // start-up does not end the process).
    let reload = Arc::new(AtomicBool::new(false));
    #[cfg(not(windows))]
    signal_hook::flag::register(signal_hook::consts::SIGHUP, reload.clone())
        .context("installing signal handlers")?;
    match mode {
        Mode::Quic => Daemon::new(&config)
            .with_context(|| format!("starting with {}", config_path.display()))?
            .run(&stop, &reload)
            .with_context(|| format!("serving with {}", config_path.display()))?,
        Mode::UdpEcho => quixd::daemon::run_udp_echo(&config, &stop)
            .with_context(|| format!("udp-echo with {}", config_path.display()))?,
    }
    Ok(())
}

/// Shutdown on Windows: Ctrl-C and Ctrl-Break drain like SIGINT (a second one exits at once);
/// closing the console, logoff and system shutdown drain for as long as Windows allows.
#[cfg(windows)]
mod console_ctrl {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, OnceLock};
    use std::time::Duration;

    use windows_sys::core::BOOL;
    use windows_sys::Win32::System::Console::{
        SetConsoleCtrlHandler, CTRL_BREAK_EVENT, CTRL_CLOSE_EVENT, CTRL_C_EVENT, CTRL_LOGOFF_EVENT,
        CTRL_SHUTDOWN_EVENT,
    };

    static STOP: OnceLock<Arc<AtomicBool>> = OnceLock::new();

    /// Runs on a thread Windows starts for each event.
    unsafe extern "system" fn handler(event: u32) -> BOOL {
        let Some(stop) = STOP.get() else { return 0 };
        match event {
            CTRL_C_EVENT | CTRL_BREAK_EVENT => {
                if stop.swap(true, Ordering::SeqCst) {
                    std::process::exit(1);
                }
                1
            }
            CTRL_CLOSE_EVENT | CTRL_LOGOFF_EVENT | CTRL_SHUTDOWN_EVENT => {
                stop.store(true, Ordering::SeqCst);
                // Windows ends the process when this returns (or after about 5 s): give the
                // drain that time; the process exits sooner if the drain finishes first.
                std::thread::sleep(Duration::from_millis(4500));
                1
            }
            _ => 0,
        }
    }

    pub fn install(stop: Arc<AtomicBool>) -> std::io::Result<()> {
        let _ = STOP.set(stop);
        // SAFETY: `handler` is a valid handler routine that lives as long as the process.
        if unsafe { SetConsoleCtrlHandler(Some(handler), 1) } == 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
}
