//! `replog status --cluster`: one row per member, each member asked for its own status (as
//! `etcdctl endpoint status --cluster` does), with the lag and link the leader sees.

use replog_core::RoleKind;
use replog_runtime::client;
use replog_runtime::status::{MemberReport, StatusReport};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::Duration;

/// How long the target may take to name the members.
const TARGET_TIMEOUT: Duration = Duration::from_secs(3);
/// How long each member may take to answer (all are asked at once).
const MEMBER_TIMEOUT: Duration = Duration::from_secs(2);

/// One member as the table shows it: its own report, or why it gave none.
#[derive(Debug)]
struct Row {
    address: String,
    /// The configuration's row for it (the leader's, when a leader answered).
    member: Option<MemberReport>,
    report: Result<StatusReport, String>,
}

pub fn run(target: &str, json: bool) -> Result<(), String> {
    let first = client::status(target, TARGET_TIMEOUT).map_err(|e| e.to_string())?;
    let addresses = member_addresses(&first);
    // Every member at once, each within its own timeout (the target answers again: a fresh view).
    let reports: Vec<Result<StatusReport, String>> = std::thread::scope(|scope| {
        let asks: Vec<_> = addresses
            .iter()
            .map(|address| {
                scope.spawn(move || client::status(address, MEMBER_TIMEOUT).map_err(|e| e.to_string()))
            })
            .collect();
        asks.into_iter()
            .map(|ask| ask.join().unwrap_or_else(|_| Err("the status call panicked".into())))
            .collect()
    });
    // The leader's configuration knows each member's lag and link; else the target's.
    let leader = reports
        .iter()
        .filter_map(|report| report.as_ref().ok())
        .filter(|report| report.role == RoleKind::Leader)
        .max_by_key(|report| report.term)
        .cloned();
    let view = leader.as_ref().unwrap_or(&first);
    let rows: Vec<Row> = addresses
        .iter()
        .zip(reports)
        .map(|(address, report)| Row {
            address: address.clone(),
            member: view.members.iter().find(|member| &member.address == address).cloned(),
            report,
        })
        .collect();
    let unreachable = rows.iter().filter(|row| row.report.is_err()).count();
    if json {
        let array: Vec<Value> = rows.iter().map(|row| row_json(row, leader.is_some())).collect();
        println!("{}", Value::Array(array));
    } else {
        print_table(&rows, leader.is_some());
    }
    if unreachable > 0 {
        return Err(format!("{unreachable} of {} member(s) did not answer", rows.len()));
    }
    Ok(())
}

/// The members' addresses as the target knows them (its configuration; a node in none, its
/// own address and its peers').
fn member_addresses(report: &StatusReport) -> Vec<String> {
    if !report.members.is_empty() {
        return report.members.iter().map(|member| member.address.clone()).collect();
    }
    let peers = report.peers.iter().map(|peer| peer.address);
    std::iter::once(report.address).chain(peers).map(|address: SocketAddr| address.to_string()).collect()
}

/// The name of the node at `address` if some row's report names it, else the address.
fn name_of(rows: &[Row], address: SocketAddr) -> String {
    rows.iter()
        .filter_map(|row| row.report.as_ref().ok())
        .find(|report| report.address == address)
        .map_or_else(|| address.to_string(), |report| report.name.clone())
}

fn print_table(rows: &[Row], leader_answered: bool) {
    println!(
        "{:<10}  {:<21}  {:<16}  {:<13}  {:>5}  {:<10}  {:>8}  {:>8}  {:>8}  {:>6}  STATUS",
        "NAME", "ADDRESS", "ID", "ROLE", "TERM", "LEADER", "COMMIT", "LAST", "DURABLE", "LAG"
    );
    let dash = || "-".to_string();
    for row in rows {
        let name = match (&row.report, &row.member) {
            (Ok(report), _) => report.name.clone(),
            (Err(_), Some(member)) => member.name.clone().unwrap_or_else(dash),
            (Err(_), None) => dash(),
        };
        let id = match (&row.report, &row.member) {
            (Ok(report), _) => report.id.clone(),
            (Err(_), Some(member)) => member.id.clone(),
            (Err(_), None) => dash(),
        };
        let lag = row.member.as_ref().and_then(|member| member.lag).map_or_else(dash, |lag| lag.to_string());
        match &row.report {
            Ok(report) => println!(
                "{:<10}  {:<21}  {:<16}  {:<13}  {:>5}  {:<10}  {:>8}  {:>8}  {:>8}  {:>6}  {}",
                name,
                row.address,
                id,
                role(report, row.member.as_ref()),
                report.term.0,
                report.leader.map_or_else(dash, |leader| name_of(rows, leader)),
                report.commit.0,
                report.last_index.0,
                report.durable_index.0,
                lag,
                link(row.member.as_ref(), leader_answered),
            ),
            Err(error) => println!(
                "{:<10}  {:<21}  {:<16}  {:<13}  {:>5}  {:<10}  {:>8}  {:>8}  {:>8}  {:>6}  unreachable: {error}",
                name,
                row.address,
                id,
                row.member.as_ref().map_or_else(dash, |member| member.role.clone()),
                "-",
                "-",
                "-",
                "-",
                "-",
                lag,
            ),
        }
    }
    if !leader_answered {
        eprintln!("note: no leader answered: lag and links are known only to the leader");
    }
}

/// The node's role, and `learner` for a follower the configuration does not let vote.
fn role(report: &StatusReport, member: Option<&MemberReport>) -> String {
    match member.map(|member| member.role.as_str()) {
        Some(role @ ("learner" | "joining")) if report.role == RoleKind::Follower => role.to_string(),
        _ => report.role.to_string(),
    }
}

/// Whether the leader's link to the member is up, as the leader sees it.
fn link(member: Option<&MemberReport>, leader_answered: bool) -> &'static str {
    match member {
        Some(member) if leader_answered && member.connected => "ok, connected",
        Some(_) if leader_answered => "ok, leader's link down",
        _ => "ok",
    }
}

fn row_json(row: &Row, leader_answered: bool) -> Value {
    let member = row.member.as_ref();
    let mut object = json!({
        "address": row.address,
        "name": member.and_then(|member| member.name.clone()),
        "id": member.map(|member| member.id.clone()),
        "member_role": member.map(|member| member.role.clone()),
        "lag": member.and_then(|member| member.lag),
        "connected": member.filter(|_| leader_answered).map(|member| member.connected),
        "reachable": row.report.is_ok(),
    });
    match &row.report {
        Ok(report) => {
            object["name"] = json!(report.name);
            object["id"] = json!(report.id);
            object["role"] = json!(report.role);
            object["term"] = json!(report.term.0);
            object["leader"] = json!(report.leader.map(|leader| leader.to_string()));
            object["commit"] = json!(report.commit.0);
            object["last_index"] = json!(report.last_index.0);
            object["durable_index"] = json!(report.durable_index.0);
        }
        Err(error) => object["error"] = json!(error),
    }
    object
}
