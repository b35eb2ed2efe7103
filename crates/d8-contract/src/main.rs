//! `svdm-d8 data export create|list|download|delete` — the contract client's command line, with
//! d8's arguments, defaults and flags (docs/development/D8-CLIENT.md §1). Not a product: the demo
//! and tests use it to meet the module exactly as `d8` users do.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use svdm_d8_contract::export::{DEFAULT_TTL, Exports, Generation, Target, resolve_group};
use svdm_d8_contract::kubecfg::Access;
use svdm_d8_contract::transfer::{Aids, Endpoint};
use svdm_d8_contract::{Error, Result, publish};

#[derive(Parser)]
#[command(
    name = "svdm-d8",
    version,
    about = "What `d8 data export` does, no more (test client)"
)]
struct Cli {
    /// The d8 release whose behaviour to reproduce: v0.33.6 or v0.33.14.
    #[arg(
        long,
        env = "SVDM_D8_GENERATION",
        default_value = "v0.33.6",
        global = true
    )]
    generation: Generation,
    #[command(subcommand)]
    data: DataCmd,
}

#[derive(Subcommand)]
enum DataCmd {
    /// `d8 data …`
    Data {
        #[command(subcommand)]
        group: GroupCmd,
    },
}

#[derive(Subcommand)]
enum GroupCmd {
    /// `d8 data export …`
    Export {
        #[command(subcommand)]
        cmd: ExportCmd,
    },
}

#[derive(Args)]
struct Common {
    #[arg(short = 'n', long, default_value = "d8-storage-volume-data-manager")]
    namespace: String,
    /// Three-state as in d8: unset runs the publish auto-detect.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    publish: Option<bool>,
    #[arg(long, default_value = DEFAULT_TTL)]
    ttl: String,
}

/// Test aids, not in d8 (see `transfer::Aids`).
#[derive(Args)]
struct AidArgs {
    /// Send the data requests under the public prefix `/<namespace>/<name>/` to status.url.
    #[arg(long, hide = true)]
    public_prefix_on_url: bool,
    /// Dial ADDR (ip:port) for status.url's host, keeping its TLS name.
    #[arg(long, hide = true)]
    connect_to: Option<std::net::SocketAddr>,
}

impl AidArgs {
    fn aids(&self, namespace: &str, name: &str) -> Aids {
        Aids {
            public_prefix_on_url: self
                .public_prefix_on_url
                .then(|| format!("{namespace}/{name}")),
            connect_to: self.connect_to,
        }
    }
}

#[derive(Subcommand)]
enum ExportCmd {
    Create {
        name: String,
        target: String,
        #[command(flatten)]
        common: Common,
    },
    Delete {
        name: String,
        #[arg(short = 'n', long, default_value = "d8-storage-volume-data-manager")]
        namespace: String,
    },
    #[command(alias = "ls")]
    List {
        source: String,
        path: Option<String>,
        #[command(flatten)]
        common: Common,
        #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
        cleanup: Option<bool>,
        #[command(flatten)]
        aids: AidArgs,
    },
    Download {
        source: String,
        path: Option<String>,
        #[arg(short = 'o', long)]
        output: Option<PathBuf>,
        #[command(flatten)]
        common: Common,
        #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
        cleanup: Option<bool>,
        #[command(flatten)]
        aids: AidArgs,
    },
}

async fn resolve_publish(access: &Access, explicit: Option<bool>) -> Result<bool> {
    match explicit {
        Some(p) => Ok(p),
        None => publish::detect(access).await,
    }
}

/// `NAME` or `KIND/VOLUME`: the export's name, and the target when d8 creates it itself.
fn source(s: &str) -> Result<(String, Option<Target>)> {
    if s.contains('/') {
        let t = Target::parse(s)
            .ok_or_else(|| Error::step("parse arguments", format!("invalid volume {s:?}")))?;
        Ok((t.auto_name(), Some(t)))
    } else {
        Ok((s.to_owned(), None))
    }
}

struct Session {
    access: Access,
    exports: Exports,
    publish: bool,
}

async fn open(generation: Generation, common: &Common) -> Result<Session> {
    let access = Access::from_env().await?;
    let publish = resolve_publish(&access, common.publish).await?;
    let group = resolve_group(&access, generation, &common.namespace).await?;
    let exports = Exports::new(&access, generation, &group, &common.namespace);
    Ok(Session {
        access,
        exports,
        publish,
    })
}

async fn run(cli: Cli) -> Result<()> {
    let DataCmd::Data {
        group: GroupCmd::Export { cmd },
    } = cli.data;
    let generation = cli.generation;
    match cmd {
        ExportCmd::Create {
            name,
            target,
            common,
        } => {
            let t = Target::parse(&target).ok_or_else(|| {
                Error::step("parse arguments", format!("invalid volume {target:?}"))
            })?;
            let s = open(generation, &common).await?;
            s.exports.create(&name, &t, &common.ttl, s.publish).await?;
            s.exports.ensure_published(&name, s.publish).await?;
            let r = s.exports.wait_ready(&name).await?;
            println!("DataExport {name} is ready: url {}", r.url);
            if !r.public_url.is_empty() {
                println!("public url {}", r.public_url);
            }
            Ok(())
        }
        ExportCmd::Delete { name, namespace } => {
            let access = Access::from_env().await?;
            let group = resolve_group(&access, generation, &namespace).await?;
            Exports::new(&access, generation, &group, &namespace)
                .delete(&name)
                .await?;
            println!("DataExport {name} deleted");
            Ok(())
        }
        ExportCmd::List {
            source: src,
            path,
            common,
            cleanup,
            aids,
        } => {
            let (name, target) = source(&src)?;
            let s = open(generation, &common).await?;
            if let Some(t) = &target {
                s.exports.create(&name, t, &common.ttl, s.publish).await?;
            }
            s.exports.ensure_published(&name, s.publish).await?;
            let r = s.exports.wait_ready(&name).await?;
            let ep = Endpoint::new(
                &s.access,
                &r,
                s.publish,
                &aids.aids(&common.namespace, &name),
            )?;
            let out = ep.list(path.as_deref().unwrap_or_default()).await?;
            print!("{out}");
            if target.is_some() && cleanup == Some(true) {
                s.exports.delete(&name).await?;
            }
            Ok(())
        }
        ExportCmd::Download {
            source: src,
            path,
            output,
            common,
            cleanup,
            aids,
        } => {
            let (name, target) = source(&src)?;
            let s = open(generation, &common).await?;
            if let Some(t) = &target {
                s.exports.create(&name, t, &common.ttl, s.publish).await?;
            }
            s.exports.ensure_published(&name, s.publish).await?;
            let r = s.exports.wait_ready(&name).await?;
            let ep = Arc::new(Endpoint::new(
                &s.access,
                &r,
                s.publish,
                &aids.aids(&common.namespace, &name),
            )?);
            let path = format!("/{}", path.unwrap_or_default().trim_start_matches('/'));
            let out = output.unwrap_or_else(|| {
                if r.volume_mode == "Block" {
                    PathBuf::from(&name)
                } else {
                    // The last path element; empty for a directory: the current directory.
                    PathBuf::from(
                        path.rsplit('/')
                            .next()
                            .filter(|s| !s.is_empty())
                            .unwrap_or("."),
                    )
                }
            });
            let sum = ep.download(&path, &out).await?;
            eprintln!(
                "d8: downloaded {} files ({} bytes, {} directories listed, {} skipped) in {:.2}s to {}",
                sum.files,
                sum.bytes,
                sum.dirs,
                sum.skipped,
                sum.seconds,
                out.display()
            );
            if target.is_some() && cleanup == Some(true) {
                s.exports.delete(&name).await?;
            }
            Ok(())
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Cli::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("svdm-d8: {e}");
            ExitCode::FAILURE
        }
    }
}
