//! The replog command line.

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "replog", version, about = "A replicated log built on Raft")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Start a node.
    Start {
        /// Node ID (names the data folder data/<ID>/)
        #[arg(short, long)]
        id: String,
        /// Address to bind to
        #[arg(short, long, default_value = "127.0.0.1:8080")]
        address: String,
        /// Peer addresses (comma-separated)
        #[arg(short, long, value_delimiter = ',')]
        peers: Vec<String>,
        /// Start as leader (starts an election at once)
        #[arg(short, long)]
        leader: bool,
    },
    /// Append a command to the log.
    Append {
        /// Target node address
        #[arg(short, long, default_value = "127.0.0.1:8080")]
        target: String,
        /// Command to append
        #[arg(short, long)]
        command: String,
    },
    /// Query the log.
    Query {
        /// Target node address
        #[arg(short, long, default_value = "127.0.0.1:8080")]
        target: String,
    },
}

fn main() {
    let cli = Cli::parse();
    eprintln!("replog: '{:?}' needs the runtime, which is not built yet", cli.command);
    std::process::exit(2);
}
