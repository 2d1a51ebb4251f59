//! The `ringmail` binary: parse flags, load and validate the config, start the workers; or run
//! the built-in demo. Errors become `anyhow` messages here and nowhere else.

#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use ringmail::config::{FileConfig, Overrides};

#[derive(Parser)]
#[command(
    version,
    about = "IMAP proxy engine on io_uring (a drop-in successor to the Zimbra Proxy)"
)]
struct Cli {
    /// Configuration file (TOML; see docs/configuration.md).
    #[arg(long, short, default_value = "/etc/ringmail/ringmail.toml")]
    config: PathBuf,
    /// Validate the configuration (file plus flags) and exit.
    #[arg(long)]
    check_config: bool,
    /// Start even though another process (an older ringmail) listens on our addresses: bind
    /// beside it, then send it SIGTERM so that it drains. Upgrades without dropping sessions.
    #[arg(long)]
    takeover: bool,
    /// Log lines as text (default) or one JSON object per line (for log shippers).
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
    #[command(flatten)]
    overrides: Overrides,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Remove ACCOUNT's routes and aliases (every protocol) from the running instance's route
    /// cache, through its admin endpoint (`[admin] listen`), as `zmproxypurge` does after a
    /// mailbox moves.
    Purge {
        /// The account, as the lookup returns it (e.g. alice@example.com).
        account: String,
    },
    /// List the lookup handlers (and memcached servers) the running instance uses, each up or
    /// down since when, with its last error (what `zmprov -garpu` / `-gamcs` answer).
    Servers,
    /// Read a Zimbra-generated nginx configuration (the file that includes the mail, memcache
    /// and zm_lookup parts) and print the equivalent ringmail TOML; what cannot be carried
    /// over is listed on stderr (and as comments at the top of the output).
    ImportNginx {
        /// Usually /opt/zimbra/conf/nginx.conf.
        file: PathBuf,
    },
    /// Run the proxy in front of a built-in demo mailbox (needs nothing else installed).
    Demo {
        /// Where the proxy listens.
        #[arg(long, default_value = "127.0.0.1:1143")]
        listen: SocketAddr,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        // colour codes only for a person at a terminal, never into files or journald
        LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => logs.json().flatten_event(true).init(),
    }
    if let Some(Command::ImportNginx { file }) = &cli.command {
        let imported = ringmail::import_nginx::import_file(file).map_err(anyhow::Error::msg)?;
        for w in &imported.warnings {
            eprintln!("warning: {w}");
        }
        print!("{}", imported.toml);
        return Ok(());
    }
    let mut file = match &cli.command {
        Some(Command::Demo { listen }) => demo_config(*listen)?,
        Some(Command::Purge { .. } | Command::Servers | Command::ImportNginx { .. }) | None => {
            FileConfig::load(&cli.config).map_err(anyhow::Error::msg)?
        }
    };
    cli.overrides.apply(&mut file);
    let config = file
        .validate()
        .map_err(anyhow::Error::msg)
        .context("invalid configuration")?;
    match &cli.command {
        Some(Command::Purge { account }) => {
            let target = format!(
                "/purge?account={}",
                ringmail::proxy::admin::encode_query(account.as_bytes())
            );
            return ask_admin(config.admin, "POST", &target);
        }
        Some(Command::Servers) => return ask_admin(config.admin, "GET", "/servers"),
        _ => {}
    }
    if cli.check_config {
        // load what a start loads: certificates, keys, the backend CA; probe io_uring
        ringmail::proxy::worker::prepare(&config).context("invalid configuration")?;
        let listeners: Vec<String> = config.listeners.iter().map(ToString::to_string).collect();
        println!(
            "configuration OK: {} worker(s), listeners {listeners:?}",
            config.workers.count
        );
        return Ok(());
    }
    ringmail::proxy::worker::run(config, cli.takeover)
}

/// `ringmail purge` / `ringmail servers`: ask the running instance's admin endpoint, print
/// its answer.
fn ask_admin(admin: Option<SocketAddr>, method: &str, target: &str) -> anyhow::Result<()> {
    let Some(addr) = admin else {
        anyhow::bail!("the admin endpoint is off (admin.listen is empty): nothing to ask");
    };
    let (code, body) = ringmail::proxy::admin::request(addr, method, target)
        .with_context(|| format!("asking the admin endpoint at {addr} (is ringmail running?)"))?;
    if code != 200 {
        anyhow::bail!("the admin endpoint answered {code}: {}", body.trim());
    }
    print!("{body}");
    Ok(())
}

fn demo_config(listen: SocketAddr) -> anyhow::Result<FileConfig> {
    let mailbox = ringmail::demo::start_mailbox("127.0.0.1:0".parse()?)
        .context("starting the demo mailbox")?;
    let mut file = FileConfig::default();
    file.imap.listen = vec![listen.to_string().as_str().into()];
    file.pop3.listen = Vec::new();
    file.lookup
        .routes
        .insert("*".into(), mailbox.to_string().as_str().into());
    let (host, port) = (listen.ip(), listen.port());
    println!(
        "ringmail demo: IMAP proxy on {listen} -> built-in demo mailbox on {mailbox} \
         (static route \"*\").\n\
         Any user name works; the password is \"{pw}\". Try, in another terminal:\n\
         \n  curl 'imap://{host}:{port}/INBOX;UID=1' -u demo:{pw}\n\
         \n  curl 'imap://{host}:{port}/' -u alice:{pw}\n\
         \n  python3 -c \"import imaplib; m = imaplib.IMAP4('{host}', {port}); \
         m.login('demo', '{pw}'); m.select('INBOX'); print(m.fetch('2', '(BODY[])')[1][0][1].decode())\"\n\
         \nA wrong password shows the failed-login delay: NO after 2 s, again after 4 s, and \
         after 8 s the third NO with a BYE, and the connection closes.\n\
         Press Ctrl-C to stop.\n",
        pw = ringmail::demo::PASSWORD
    );
    Ok(file)
}
