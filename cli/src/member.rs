//! `replog member ...`: see and change the cluster's members, one server at a time.

use clap::Subcommand;
use replog_core::{NodeId, RoleKind};
use replog_runtime::client;
use replog_runtime::codec::{MemberAction, MemberRequest};
use replog_runtime::status::StatusReport;
use std::time::Duration;

#[derive(Subcommand, Debug)]
pub enum MemberCommand {
    /// One row per member: id, name, address, voter or learner, match index and lag (from the
    /// leader), connected or not.
    List {
        /// Any node of the cluster (the leader's view is shown when it can be reached)
        #[arg(short, long, default_value = "127.0.0.1:8080")]
        target: String,
        /// Print the rows as JSON
        #[arg(long)]
        json: bool,
    },
    /// Add a running node that belongs to no other cluster (a node whose data folder was wiped
    /// and waits to be added, or one removed from this cluster): as a learner that the leader
    /// promotes to voter once it has caught up. A new node adds itself with `replog start ...
    /// --join`.
    Add {
        /// Any node of the cluster
        #[arg(short, long, default_value = "127.0.0.1:8080")]
        target: String,
        /// The new node's address (it must be running: its id is asked from it)
        #[arg(long, value_name = "ADDR")]
        address: String,
        /// Keep it a learner (it receives the log but never votes) until `member promote`
        #[arg(long)]
        learner: bool,
        /// Give up after this many seconds
        #[arg(long, default_value_t = 10.0)]
        timeout: f64,
    },
    /// Make a learner a voter now.
    Promote {
        /// Any node of the cluster
        #[arg(short, long, default_value = "127.0.0.1:8080")]
        target: String,
        /// The learner's address
        #[arg(long, value_name = "ADDR")]
        address: String,
        /// Give up after this many seconds
        #[arg(long, default_value_t = 10.0)]
        timeout: f64,
    },
    /// Remove a member (a dead machine, a node to retire, even the leader: it steps down once
    /// its removal commits and hands over to an up-to-date voter).
    Remove {
        /// Any node of the cluster
        #[arg(short, long, default_value = "127.0.0.1:8080")]
        target: String,
        /// The member's address
        #[arg(long, value_name = "ADDR")]
        address: String,
        /// Remove even if the voters left reachable would be too few to commit
        #[arg(long)]
        force: bool,
        /// Give up after this many seconds
        #[arg(long, default_value_t = 10.0)]
        timeout: f64,
    },
}

pub fn run(command: MemberCommand) -> Result<(), String> {
    match command {
        MemberCommand::List { target, json } => list(&target, json),
        MemberCommand::Add { target, address, learner, timeout } => {
            crate::parse_address("--address", &address)?;
            // The new node knows its id (drawn at its first start); the cluster learns it here.
            let report = client::status(&address, Duration::from_secs(3)).map_err(|e| {
                format!("cannot reach the new node at {address} ({e}): start it first (`replog start -i NAME -a {address} --join {target}`)")
            })?;
            let id = replog_runtime::storage::parse_id(&report.id)
                .map_err(|why| format!("{address} reports no usable id ({why}); is it an older version?"))?;
            refuse_another_clusters_node(&target, &report)?;
            let action = if learner { MemberAction::AddLearner } else { MemberAction::Add };
            change(
                &target,
                MemberRequest { action, address: report.address.to_string(), id, force: false },
                timeout,
            )?;
            let how = if learner { "as a learner" } else { "as a learner; promoted to voter once caught up" };
            println!("➕ {address} added {how}");
            Ok(())
        }
        MemberCommand::Promote { target, address, timeout } => {
            let request = MemberRequest {
                action: MemberAction::Promote,
                address: address.clone(),
                id: NodeId(0),
                force: false,
            };
            change(&target, request, timeout)?;
            println!("⬆️  {address} is a voter");
            Ok(())
        }
        MemberCommand::Remove { target, address, force, timeout } => {
            let request = MemberRequest {
                action: MemberAction::Remove,
                address: address.clone(),
                id: NodeId(0),
                force,
            };
            change(&target, request, timeout)?;
            println!("➖ {address} removed");
            Ok(())
        }
    }
}

/// Refuses a node that is a member of a configuration sharing nobody with this cluster: it
/// belongs to another cluster (a node started without `--peers` or `--join` bootstraps a
/// cluster of one). Adding it would mix two logs that agree on indexes and terms but not on
/// content, and two leaders of the same term would meet (the core stops on that). A fresh
/// node or a wiped one has no configuration; a node removed from this cluster shares members.
fn refuse_another_clusters_node(target: &str, new: &StatusReport) -> Result<(), String> {
    if new.members.is_empty() {
        return Ok(());
    }
    let cluster = leaders_view(target)?;
    let ours: std::collections::BTreeSet<&str> = cluster.members.iter().map(|m| m.id.as_str()).collect();
    if new.members.iter().any(|member| ours.contains(member.id.as_str())) {
        return Ok(());
    }
    Err(format!(
        "{} belongs to another cluster ({} member(s), term {}): adding it would mix two logs; start the \
         new node on an empty data folder with `--join {target}` instead",
        new.address,
        new.members.len(),
        new.term.0
    ))
}

fn change(target: &str, request: MemberRequest, timeout: f64) -> Result<u64, String> {
    let timeout = Duration::from_secs_f64(timeout.max(0.1));
    client::change_membership(target, &request, timeout).map_err(|e| e.to_string())
}

/// The leader's status if it can be reached (it knows every member's progress), else the
/// target's.
fn leaders_view(target: &str) -> Result<StatusReport, String> {
    let report = client::status(target, Duration::from_secs(5)).map_err(|e| e.to_string())?;
    if report.role == RoleKind::Leader {
        return Ok(report);
    }
    match report.leader {
        Some(leader) => Ok(client::status(&leader.to_string(), Duration::from_secs(5)).unwrap_or(report)),
        None => Ok(report),
    }
}

fn list(target: &str, json: bool) -> Result<(), String> {
    let report = leaders_view(target)?;
    if json {
        let rows = serde_json::to_string(&report.members).map_err(|e| e.to_string())?;
        println!("{rows}");
        return Ok(());
    }
    let leading = report.role == RoleKind::Leader;
    println!(
        "configuration as {} ({}) sees it{}:",
        report.address,
        report.role,
        if report.members_committed { "" } else { ", a change not committed yet" }
    );
    println!(
        "  {:<16}  {:<10}  {:<21}  {:<8}  {:>10}  {:>8}  LINK",
        "ID", "NAME", "ADDRESS", "ROLE", "MATCH", "LAG"
    );
    for member in &report.members {
        let dash = || "-".to_string();
        let is_leader = leading && member.address == report.address.to_string();
        println!(
            "  {:<16}  {:<10}  {:<21}  {:<8}  {:>10}  {:>8}  {}",
            member.id,
            member.name.clone().unwrap_or_else(dash),
            member.address,
            if is_leader { "leader".to_string() } else { member.role.clone() },
            member.match_index.map_or_else(dash, |index| index.0.to_string()),
            member.lag.map_or_else(dash, |lag| lag.to_string()),
            if member.connected { "connected" } else { "disconnected" }
        );
    }
    if !leading {
        eprintln!("note: no leader reachable: match and lag are known only to the leader");
    }
    Ok(())
}
