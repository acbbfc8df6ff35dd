//! What a run reports: its counters, the coverage of interesting paths, and the verdict.

use crate::checker::Violation;
use crate::follow::FollowStats;
use crate::frontend::AdmissionStats;
use crate::history::Tally;
use crate::network::NetworkStats;
use crate::operator::OperatorStats;
use crate::trace::Trace;
use crate::workload::SessionStats;
use replog_core::Marks;
use std::fmt::Write as _;

/// How often the interesting paths ran: faults from the world, decisions from the core's own
/// coverage marks (`replog_core::Marks`).
#[derive(Clone, Copy, Debug, Default)]
pub struct Coverage {
    pub elections: u64,
    pub split_votes: u64,
    pub truncations: u64,
    pub stale_term_messages: u64,
    pub leader_stepdowns: u64,
    pub prevote_rejections: u64,
    pub votes_ignored_by_lease: u64,
    pub torn_writes: u64,
    pub fsync_failures: u64,
    pub storage_faults: u64,
    pub lost_entries_detected: u64,
    pub repair_refusals: u64,
    pub compactions: u64,
    pub snapshot_transfers: u64,
    pub snapshot_chunks_sent: u64,
    pub snapshot_resumes: u64,
    pub snapshots_installed: u64,
    pub snapshots_stale: u64,
    pub log_reads: u64,
    pub transfers_started: u64,
    pub transfer_elections: u64,
    pub transfers_aborted: u64,
    pub membership_changes: u64,
    pub promotions: u64,
    pub changes_refused: u64,
    pub removed_stepdowns: u64,
    pub votes_from_non_voters: u64,
    pub campaigns_as_non_voter: u64,
}

impl Coverage {
    /// Adds what a node's marks counted between two moments of one life.
    pub(crate) fn add(&mut self, before: &Marks, after: &Marks) {
        self.elections += after.elections - before.elections;
        self.split_votes += after.split_votes - before.split_votes;
        self.truncations += after.truncations - before.truncations;
        self.stale_term_messages += after.stale_term_messages - before.stale_term_messages;
        self.leader_stepdowns += after.leader_stepdowns - before.leader_stepdowns;
        self.prevote_rejections += after.pre_vote_rejections_sent - before.pre_vote_rejections_sent;
        self.votes_ignored_by_lease += after.votes_ignored_by_lease - before.votes_ignored_by_lease;
        self.lost_entries_detected += after.lost_entries_detected - before.lost_entries_detected;
        self.repair_refusals += after.repair_refusals - before.repair_refusals;
        self.compactions += after.compactions - before.compactions;
        self.snapshot_transfers += after.snapshot_transfers - before.snapshot_transfers;
        self.snapshot_chunks_sent += after.snapshot_chunks_sent - before.snapshot_chunks_sent;
        self.snapshot_resumes += after.snapshot_resumes - before.snapshot_resumes;
        self.snapshots_installed += after.snapshots_installed - before.snapshots_installed;
        self.snapshots_stale += after.snapshots_stale - before.snapshots_stale;
        self.log_reads += after.log_reads - before.log_reads;
        self.transfers_started += after.transfers_started - before.transfers_started;
        self.transfer_elections += after.transfer_elections - before.transfer_elections;
        self.transfers_aborted += after.transfers_aborted - before.transfers_aborted;
        self.membership_changes += after.membership_changes - before.membership_changes;
        self.promotions += after.promotions - before.promotions;
        self.changes_refused += after.changes_refused - before.changes_refused;
        self.removed_stepdowns += after.removed_stepdowns - before.removed_stepdowns;
        self.votes_from_non_voters += after.votes_from_non_voters - before.votes_from_non_voters;
        self.campaigns_as_non_voter += after.campaigns_as_non_voter - before.campaigns_as_non_voter;
    }
}

#[derive(Clone, Debug, Default)]
pub struct Summary {
    pub ticks: u64,
    pub network: NetworkStats,
    pub crashes: u64,
    pub restarts: u64,
    pub pauses: u64,
    pub partitions: u64,
    pub leader_changes: u64,
    pub committed: u64,
    pub clients: Tally,
    pub coverage: Coverage,
    /// What the operator's membership changes met.
    pub operator: OperatorStats,
    /// What the session clients met, how the nodes screened their appends, and what the
    /// follow readers read.
    pub sessions: SessionStats,
    pub admissions: AdmissionStats,
    pub follow: FollowStats,
    /// Configuration entries in the final committed log.
    pub changes_committed: u64,
    /// Fingerprint of every event and action, in order: equal runs have equal digests.
    pub digest: u64,
}

#[derive(Debug)]
pub struct RunResult {
    pub summary: Summary,
    pub violation: Option<Violation>,
    pub trace: Trace,
}

/// A one-paragraph summary of a run.
pub fn render_summary(summary: &Summary) -> String {
    let mut out = String::new();
    let net = &summary.network;
    let c = &summary.coverage;
    let _ = writeln!(
        out,
        "ticks={} messages: sent={} delivered={} dropped={} duplicated={} delayed={} replayed={}",
        summary.ticks, net.sent, net.delivered, net.dropped, net.duplicated, net.delayed, net.replayed
    );
    let _ = writeln!(
        out,
        "faults: crashes={} restarts={} pauses={} partitions={} torn_writes={} fsync_failures={}",
        summary.crashes,
        summary.restarts,
        summary.pauses,
        summary.partitions,
        c.torn_writes,
        c.fsync_failures
    );
    let _ = writeln!(
        out,
        "raft: elections={} leader_changes={} split_votes={} truncations={} stale_term_messages={} stepdowns={} prevote_rejections={} lease_ignored_votes={} committed={}",
        c.elections, summary.leader_changes, c.split_votes, c.truncations, c.stale_term_messages, c.leader_stepdowns, c.prevote_rejections, c.votes_ignored_by_lease, summary.committed
    );
    if summary.operator.requests > 0 || c.membership_changes > 0 {
        let o = &summary.operator;
        let _ = writeln!(
            out,
            "membership: requests={} appended={} committed={} promotions={} refused={} (pending={} not_ready={} unsafe={} transferring={} invalid={}) not_leader={} unanswered={} removed_stepdowns={} non_voter_votes_ignored={}",
            o.requests,
            c.membership_changes,
            summary.changes_committed,
            c.promotions,
            c.changes_refused,
            o.refused_pending,
            o.refused_not_ready,
            o.refused_unsafe,
            o.refused_transferring,
            o.refused_invalid,
            o.not_leader,
            o.unanswered,
            c.removed_stepdowns,
            c.votes_from_non_voters
        );
    }
    if summary.sessions.sessions > 0 {
        let (s, a) = (&summary.sessions, &summary.admissions);
        let _ = writeln!(
            out,
            "sessions: started={} attempts={} retries={} acked_after_retry={} recognised={} batches={} conditional={} hedged={} resends={} (answered committed={}) admitted: new={} from_table={} in_log={} same_as={} refused={} grouped={} refusals: not_ready={} unknown_session={} sessions_dropped={} forgotten={} too_far_ahead={} condition_failed={} unknown_outcomes={} given_up={}",
            s.sessions,
            s.attempts,
            s.retries,
            s.acked_after_retry,
            s.recognised,
            s.batches_acked,
            s.conditional,
            s.hedged,
            s.resends,
            s.resends_committed,
            a.proposed,
            a.committed,
            a.in_log,
            a.same_as,
            a.refused,
            a.group_proposals,
            s.not_ready,
            s.unknown_session,
            s.sessions_dropped,
            s.forgotten,
            s.too_far_ahead,
            s.condition_failed,
            s.unknown_outcomes,
            s.given_up
        );
    }
    if summary.follow.reads > 0 {
        let f = &summary.follow;
        let _ = writeln!(
            out,
            "follow: reads={} commands={} switches={} trimmed={} new_streams={}",
            f.reads, f.commands, f.switches, f.trimmed, f.restarts
        );
    }
    let _ = write!(
        out,
        "clients: acknowledged={} failed={} condition_failed={} indeterminate={} reads={} digest={:016x}",
        summary.clients.acked,
        summary.clients.failed,
        summary.clients.condition_failed,
        summary.clients.indeterminate,
        summary.clients.reads,
        summary.digest
    );
    out
}
