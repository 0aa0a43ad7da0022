//! The `microseg` binary.

use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::{bail, Context};
use clap::Parser;
use microseg_control::alerts::AlertHub;
use microseg_control::api::tls::{self, TlsListener};
use microseg_control::api::{random_token, ApiState, Tokens};
use microseg_control::appliance::{Appliance, PolicyFeed};
use microseg_control::classify::{self, Engine};
use microseg_control::cli::{Cli, Command, PolicyAction, QuarantineAction};
use microseg_control::config::{Config, LocalMachine, PolicySource};
use microseg_control::engine::{PolicyEngine, SwapObserver};
use microseg_control::metrics::Metrics;
use microseg_control::policy::PolicyDocument;
use microseg_control::quarantine::{Enforcer, Quarantines};
use microseg_control::store::Store;
use microseg_control::visibility::{Attached, Visibility, VisibilityConfig};
use microseg_control::{client, huge_pages, inspect};

fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

/// Starts this process again (`exec`, the same process id) with malloc's
/// huge-page tunable set, unless `GLIBC_TUNABLES` already says something
/// about it, and again while glibc does not take it, up to
/// `huge_pages::MAX_STARTS` times (`huge_pages::next_start`). Returns when
/// nothing is to be done, or the new start failed, which is reported; the
/// appliance then runs on 4 KiB pages.
fn start_again_with_huge_pages() {
    use huge_pages::NextStart;
    use std::os::unix::process::CommandExt;

    let current = std::env::var_os(huge_pages::TUNABLES_VAR);
    let starts = std::env::var(huge_pages::STARTS_VAR)
        .ok()
        .and_then(|value| value.parse().ok());
    let mode = huge_pages::system_thp_mode();
    let (tunables, starts) = match huge_pages::next_start(
        current.as_deref(),
        starts,
        mode.as_deref(),
        huge_pages::malloc_advises,
    ) {
        NextStart::Run => return,
        NextStart::GiveUp { starts } => {
            eprintln!("microseg: glibc's malloc did not take glibc.malloc.hugetlb=1 in {starts} starts (docs/operations.md, \"Huge pages\"); running on 4 KiB pages");
            return;
        }
        NextStart::Again { tunables, starts } => (tunables, starts),
    };
    // The executable's own path, not /proc/self/exe: the kernel names the
    // process after the file executed (`pgrep microseg`, `top`).
    let executable = match std::env::current_exe() {
        Ok(path) => path,
        Err(error) => {
            eprintln!("microseg: cannot start again with huge pages: no path to this executable ({error}); running on 4 KiB pages");
            return;
        }
    };
    let mut args = std::env::args_os();
    let name = args.next().unwrap_or_else(|| "microseg".into());
    let error = std::process::Command::new(executable)
        .arg0(name)
        .args(args)
        .env(huge_pages::TUNABLES_VAR, tunables)
        .env(huge_pages::STARTS_VAR, starts.to_string())
        .exec();
    eprintln!("microseg: cannot start again with huge pages ({error}); running on 4 KiB pages");
}

/// `microseg run`: the appliance until SIGINT/SIGTERM, reloading the
/// rules on SIGHUP, with the status API.
fn run_appliance(path: &Path) -> anyhow::Result<()> {
    use std::sync::Arc;
    use tokio::signal::unix::{signal, SignalKind};

    let config = Config::load(path, &LocalMachine)?;
    let metrics = Arc::new(Metrics::new());
    let tokens = api_tokens(&config)?;
    let (feed, engine) = match &config.source {
        PolicySource::Rules(path) => (PolicyFeed::RulesFile(path.clone()), None),
        PolicySource::Policy(initial) => {
            let store = Store::open(&config.state_dir)?;
            let document = match initial {
                Some(path) => Some(
                    PolicyDocument::from_yaml(&read(path)?)
                        .with_context(|| format!("policy: {}", path.display()))?,
                ),
                None => None,
            };
            let observer: Arc<dyn SwapObserver> = Arc::clone(&metrics) as Arc<dyn SwapObserver>;
            let restored = PolicyEngine::restore(store, document, Some(observer))
                .with_context(|| format!("policy in {}", config.state_dir.display()))?;
            eprintln!(
                "microseg: policy version {} {}",
                restored.version,
                if restored.from_store {
                    format!("restored from {}", config.state_dir.display())
                } else {
                    "applied (first start)".to_string()
                }
            );
            let engine = Arc::new(restored.engine);
            (PolicyFeed::Engine(Arc::clone(engine.cell())), Some(engine))
        }
    };
    let tls = match &config.api_tls {
        Some((cert, key)) => Some(tls::acceptor(cert, key)?),
        None => None,
    };
    // Quarantines are in the policy before the first frame is forwarded.
    let quarantines = Arc::new(
        Quarantines::open(Arc::new(Store::open(&config.state_dir)?), engine.clone())
            .with_context(|| format!("quarantine state in {}", config.state_dir.display()))?,
    );
    let alerts = if config.alerts.sinks.is_empty() {
        None
    } else {
        Some(Arc::new(
            AlertHub::start(&config.alerts).context("alerts: starting the sinks")?,
        ))
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        // Bind first: a taken port fails before any XDP program attaches.
        let listener = tokio::net::TcpListener::bind(config.api_listen)
            .await
            .with_context(|| format!("api.listen: cannot listen on {}", config.api_listen))?;
        let mut hangup = signal(SignalKind::hangup()).context("SIGHUP handler")?;
        let mut terminate = signal(SignalKind::terminate()).context("SIGTERM handler")?;
        let mut interrupt = signal(SignalKind::interrupt()).context("SIGINT handler")?;
        let body_limit = config.api_body_limit;
        let quarantined = quarantines.xdp_addresses();
        let started =
            tokio::task::spawn_blocking(move || Appliance::start(config, feed, &quarantined))
            .await
            .context("starting the appliance")??;
        let appliance = Arc::new(started);
        metrics.set_generation(appliance.generation(), appliance.status().rules);
        let config = appliance.config();
        eprintln!(
            "microseg: running: ports {}, {} {:?} worker(s) on CPUs {:?}, policy generation {} ({}), API on {}://{}",
            config.ports.join(" "),
            config.workers,
            config.poll_mode,
            config.cpus,
            appliance.generation(),
            match &config.source {
                PolicySource::Rules(path) => format!("rules file {}", path.display()),
                PolicySource::Policy(_) => format!("policy engine, state in {}", config.state_dir.display()),
            },
            if config.api_tls.is_some() { "https" } else { "http" },
            config.api_listen,
        );
        eprintln!("microseg: memory: {}", huge_pages::report());
        for problem in quarantines.attach(Arc::clone(&appliance) as Arc<dyn Enforcer>) {
            eprintln!("microseg: quarantine in XDP: {problem}");
        }
        let visibility = Arc::new(
            Visibility::for_appliance(
                &appliance,
                engine.clone(),
                Attached {
                    quarantines: Some(Arc::clone(&quarantines)),
                    alerts,
                },
                VisibilityConfig {
                    flow_capacity: config.flow_records,
                    learning: config.learning,
                    ..VisibilityConfig::default()
                },
            )
            .context("starting the flow collector")?,
        );
        drop(quarantines);
        let state = Arc::new(ApiState {
            engine,
            appliance: Some(Arc::clone(&appliance)),
            tokens,
            anonymous_reads: false,
            body_limit,
            metrics,
            visibility: Some(Arc::clone(&visibility)),
        });
        let (shutdown, on_shutdown) = tokio::sync::oneshot::channel::<()>();
        let shutdown_signal = async move {
            let _ = on_shutdown.await;
        };
        let server = match tls {
            Some(acceptor) => tokio::spawn(microseg_control::api::serve(
                TlsListener::new(listener, acceptor).context("api.tls: listening")?,
                state,
                shutdown_signal,
            )),
            None => tokio::spawn(microseg_control::api::serve(listener, state, shutdown_signal)),
        };
        loop {
            tokio::select! {
                _ = hangup.recv() => {
                    if appliance.rules().is_none() {
                        eprintln!("microseg: SIGHUP ignored: the policy is managed through the API");
                        continue;
                    }
                    let reloading = Arc::clone(&appliance);
                    match tokio::task::spawn_blocking(move || reloading.reload()).await {
                        Ok(Ok(generation)) => eprintln!(
                            "microseg: SIGHUP: rules reloaded, policy generation {generation}"
                        ),
                        Ok(Err(error)) => eprintln!(
                            "microseg: SIGHUP: rules not reloaded, generation {} stays in force: {error}",
                            appliance.generation()
                        ),
                        Err(error) => eprintln!("microseg: SIGHUP: reload failed: {error}"),
                    }
                }
                _ = terminate.recv() => break,
                _ = interrupt.recv() => break,
            }
        }
        eprintln!("microseg: stopping");
        // Live flow streams end here, so the API server can finish.
        visibility.stop();
        drop(visibility);
        let _ = shutdown.send(());
        server
            .await
            .context("API server task")?
            .context("API server")?;
        let reports = appliance.stop()?;
        let status = appliance.status();
        for report in &reports {
            let census = &report.census;
            if census.missing() != 0 {
                eprintln!(
                    "microseg: UMEM of {}: {} frame(s) unaccounted for: {census:?}",
                    report.ports,
                    census.missing()
                );
            }
        }
        eprintln!(
            "microseg: stopped: {} forwarded, {} flooded, drops {:?}",
            status.forwarded, status.flooded, status.drops
        );
        // The last reference: dropping it detaches the XDP programs.
        if Arc::try_unwrap(appliance).is_err() {
            eprintln!("microseg: still referenced at exit: XDP programs stay attached until the next start replaces them");
        }
        Ok(())
    })
}

/// The API's tokens: the configured file, or else an admin token
/// generated once into the state directory (mode 0600) and reused.
fn api_tokens(config: &Config) -> anyhow::Result<Tokens> {
    if let Some(path) = &config.api_tokens {
        return Ok(Tokens::load(path)?);
    }
    let path = config.state_dir.join("api-token");
    if !path.exists() {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::create_dir_all(&config.state_dir)
            .with_context(|| format!("state_dir: cannot create {}", config.state_dir.display()))?;
        let token = random_token().context("generating an API token")?;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("writing {}", path.display()))?;
        writeln!(file, "admin admin {token}").context("writing the API token")?;
        eprintln!(
            "microseg: generated an admin API token in {}",
            path.display()
        );
    }
    Ok(Tokens::load(&path)?)
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    match cli.command {
        Command::Run { config } => {
            drop(out);
            start_again_with_huge_pages();
            return run_appliance(&config);
        }
        Command::Demo { once } => {
            let as_expected = microseg_control::demo::run(&mut out, once)?;
            out.flush().context("writing output")?;
            if !as_expected {
                bail!("some demo checks did not come out as the policy says");
            }
        }
        Command::Policy { api, action } => {
            let (client, json) = (client::Client::for_options(&api)?, api.json);
            let success = match action {
                PolicyAction::Validate { file } => {
                    client::validate(&client, &file, json, &mut out)?
                }
                PolicyAction::Apply { file, if_match } => {
                    client::apply(&client, &file, if_match, json, &mut out)?;
                    true
                }
                PolicyAction::Get => {
                    client::get(&client, json, &mut out)?;
                    true
                }
                PolicyAction::Diff { file } => !client::diff(&client, &file, &mut out)?,
                PolicyAction::History => {
                    client::history(&client, json, &mut out)?;
                    true
                }
                PolicyAction::Rollback { version } => {
                    client::rollback(&client, version, json, &mut out)?;
                    true
                }
            };
            out.flush().context("writing output")?;
            if !success {
                drop(out);
                std::process::exit(1);
            }
        }
        Command::Explain {
            api,
            src,
            dst,
            service,
            sport,
            flow,
        } => {
            let client = client::Client::for_options(&api)?;
            let question = match flow {
                Some(id) => inspect::Question::Flow(id),
                None => inspect::Question::Flow5 {
                    src: src.context("give SRC and DST (or --flow ID)")?,
                    dst: dst.context("give DST (or --flow ID)")?,
                    service,
                    sport,
                },
            };
            inspect::explain(&client, &question, api.json, &mut out)?;
        }
        Command::Quarantine { api, action } => {
            let client = client::Client::for_options(&api)?;
            match action {
                QuarantineAction::Add {
                    target,
                    ttl,
                    reason,
                    allow,
                } => {
                    let request = inspect::quarantine_request(target, ttl, reason, &allow)?;
                    inspect::quarantine_add(&client, &request, api.json, &mut out)?;
                }
                QuarantineAction::List => inspect::quarantine_list(&client, api.json, &mut out)?,
                QuarantineAction::Lift { target } => {
                    inspect::quarantine_lift(&client, &target, api.json, &mut out)?
                }
            }
        }
        Command::Report {
            api,
            from,
            to,
            out: path,
        } => {
            let client = client::Client::for_options(&api)?;
            let text = inspect::reachability_report(&client, &from, &to, api.json)?;
            match path {
                Some(path) => {
                    std::fs::write(&path, text)
                        .with_context(|| format!("writing {}", path.display()))?;
                    eprintln!("microseg: report written to {}", path.display());
                }
                None => out.write_all(text.as_bytes()).context("writing output")?,
            }
        }
        Command::Flows {
            api,
            src,
            dst,
            verdict,
            limit,
        } => {
            let client = client::Client::for_options(&api)?;
            let filter = inspect::FlowQuery {
                src,
                dst,
                verdict,
                limit,
            };
            inspect::flows(&client, &filter, api.json, &mut out)?;
        }
        Command::Classify {
            rules,
            trace,
            reference,
        } => {
            let engine = if reference {
                Engine::Reference
            } else {
                Engine::Compiled
            };
            classify::classify_trace(&read(&rules)?, &read(&trace)?, engine, &mut out)
                .with_context(|| format!("{} / {}", rules.display(), trace.display()))?;
        }
        Command::Trace { rules, count, seed } => {
            classify::generate_trace(&read(&rules)?, count, seed, &mut out)
                .with_context(|| rules.display().to_string())?;
        }
    }
    out.flush().context("writing output")?;
    Ok(())
}
