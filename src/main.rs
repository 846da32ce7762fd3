//! eventsourced: pushes RabbitMQ messages to browsers as Server-Sent Events.
//! `main` only wires things up: the library's modules say what they do.

use eventsourced::{auth, cli, config, logging, publish, server, signals, VERSION};
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: cli::Args = argh::from_env();
    if args.version {
        println!("{VERSION}");
        return ExitCode::SUCCESS;
    }
    // Before any thread exists, so that only the signal thread receives SIGINT and SIGTERM.
    signals::block();
    logging::init(args.log_level.as_deref());
    // A panic (which ends only the request it happened in) is logged like everything else.
    std::panic::set_hook(Box::new(|info| log::error!("internal error: {info}")));
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: cli::Args) -> Result<(), Box<dyn std::error::Error>> {
    let search = match args.config {
        Some(path) => config::Search::File(path),
        None => config::Search::Default,
    };
    let config = config::load(search)?;
    if args.print_config {
        if args.show_secrets {
            print!("{}", config.to_yaml_with_secrets());
        } else {
            print!("{}", config.to_yaml());
        }
        return Ok(());
    }
    match &args.command {
        Some(cli::Command::Publish(publish)) => return Ok(publish::publish(&config, publish)?),
        Some(cli::Command::Token(token)) => {
            let key = config.auth.key.as_deref().ok_or("auth.secret is not set")?;
            let max_ttl = config.auth.max_ttl;
            if max_ttl > 0 && token.ttl > max_ttl {
                return Err(format!(
                    "--ttl {} is longer than auth.max_ttl ({max_ttl} s): the server would refuse the token",
                    token.ttl
                )
                .into());
            }
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?;
            let expires = auth::expiry(now.as_secs(), token.ttl).ok_or_else(|| {
                format!(
                    "--ttl {} is too large: the expiry would overflow",
                    token.ttl
                )
            })?;
            let values = auth::values_given(&config.queue.signed_values(), &token.value)?;
            println!(
                "expires={expires}&token={}",
                auth::token(key, &token.queue, &values, expires)
            );
            return Ok(());
        }
        None => {}
    }
    log::info!("{VERSION} starting");
    if config.sources.is_empty() {
        log::warn!("no configuration file found; using the defaults (see -c)");
    } else {
        log::info!("configuration from {}", config.sources.join(", "));
    }
    let nodes: Vec<String> = config.broker.node.iter().map(ToString::to_string).collect();
    log::info!("broker nodes: {}", nodes.join(", "));
    let drain_for = std::time::Duration::from_secs(config.server.drain);
    let server = server::Server::new(config)?;
    let (draining, stopping, reloader) = (server.stopper(), server.stopper(), server.reloader());
    signals::handle(signals::Handlers {
        drain_for,
        drain: Box::new(move || draining.drain()),
        stop: Box::new(move || stopping.stop()),
        reload: Box::new(move || reloader.reload()),
    });
    server.run()?;
    Ok(())
}
