//! Reading the log by command ID, blocking, for the CLI (`replog query --from`, `replog follow`),
//! tests and programs that consume the log.
//!
//! - [`read`] (and [`read_range`]) pages through the committed commands of an ID range, or the
//!   newest N, from one node; linearizable reads go to the leader (following redirects), which
//!   answers after it confirmed its leadership (ReadIndex), so they include every append
//!   acknowledged before the read started.
//! - [`follow`] tails the log like `tail -f`: it polls for the commands after the last one it
//!   returned and moves to another member when the one it reads from fails, stops, or falls
//!   behind. Committed commands are final and carry the same ID on every node (state machine
//!   safety, §5.4.3), so it resumes after a leader change or a restart with no gap and no
//!   duplicate. It never returns a command that is not committed.
//!
//! ```no_run
//! use replog_runtime::{client::ClientError, reader};
//! use std::time::Duration;
//!
//! fn main() -> Result<(), ClientError> {
//!     // Commands 10 to 20, as the node at 127.0.0.1:8080 has them committed.
//!     let timeout = Duration::from_secs(5);
//!     for command in reader::read_range("127.0.0.1:8080", 10, Some(20), None, false, timeout)? {
//!         println!("{} {}", command.id, String::from_utf8_lossy(&command.data));
//!     }
//!     // Every command from ID 1 on, as they commit, whichever members are up.
//!     let mut follow = reader::follow(&["127.0.0.1:8080"], Some(1), Duration::from_millis(20))?;
//!     loop {
//!         for command in follow.next_batch()? {
//!             println!("{} {}", command.id, String::from_utf8_lossy(&command.data));
//!         }
//!     }
//! }
//! ```

use crate::address::{self, AddressError};
use crate::client::{self, ClientError, Link};
use crate::codec::{CommandRecord, Frame};
use crate::limits::QUERY_ENTRIES_MAX;
use std::net::SocketAddr;
use std::thread::sleep;
use std::time::{Duration, Instant};
use tracing::info;

/// Pause before asking again where no leader is known (a linearizable read).
const RETRY_PAUSE: Duration = Duration::from_millis(100);
/// How long one request of a follower may take before the member counts as failed (a stopped
/// process holds a connection open without answering).
const CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause after a member failed before asking the next, so a cluster that is all down is not
/// dialled in a tight loop.
const FAILOVER_PAUSE: Duration = Duration::from_millis(50);
/// How long a follower reads from a member that has nothing new before it asks the others
/// whether they have more (the member may be cut off from the leader, or removed).
const IDLE_PROBE_AFTER: Duration = Duration::from_secs(2);
/// How long a follower tries the members when none answers before reporting it.
const UNREACHABLE_AFTER: Duration = Duration::from_secs(10);
/// How long `Follow::next_batch` waits for a new command before returning an empty batch.
const BATCH_WAIT_MAX: Duration = Duration::from_secs(1);

/// Committed commands of an ID range, and where the node's log stood when it answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadLog {
    /// The first command ID the node held (earlier ones were trimmed).
    pub first_id: u64,
    /// The ID of its last committed command when the read started (0 if none).
    pub last_id: u64,
    /// The commands read, in ID order, with no gap.
    pub commands: Vec<CommandRecord>,
}

/// The committed commands with IDs from `from_id` to `to_id` (inclusive; `None`: to the last
/// committed one), or with `last: Some(n)` the newest `n` of those at or after `from_id`
/// (fewer if the node trimmed older ones). See [`read`].
pub fn read_range(
    target: &str,
    from_id: u64,
    to_id: Option<u64>,
    last: Option<u64>,
    linearizable: bool,
    timeout: Duration,
) -> Result<Vec<CommandRecord>, ClientError> {
    read(target, from_id, to_id, last, linearizable, timeout).map(|log| log.commands)
}

/// As [`read_range`], also saying where the node's log stood: its first held and last
/// committed IDs. The range ends at the last command committed when the read started, however
/// far `to_id` goes. A plain read is `target`'s own view; a linearizable one is the leader's,
/// after it confirmed its leadership (following redirects until `timeout`). IDs from `from_id`
/// on that the node trimmed are an error ([`ClientError::Trimmed`]), never skipped.
pub fn read(
    target: &str,
    from_id: u64,
    to_id: Option<u64>,
    last: Option<u64>,
    linearizable: bool,
    timeout: Duration,
) -> Result<ReadLog, ClientError> {
    let started = Instant::now();
    let remaining = || timeout.saturating_sub(started.elapsed()).max(Duration::from_millis(100));
    let home = address::parse(target)?;
    let from_id = from_id.max(1);
    // The first request establishes the read (for a linearizable one: the leader confirmed
    // it). For the newest N it only learns the last ID.
    let first_ask = if last.is_some() { u64::MAX } else { from_id };
    let mut address = home;
    let (mut link, first) = loop {
        let mut link = Link::open(address, remaining())?;
        match ask(&mut link, first_ask, page_max(first_ask, to_id), linearizable)? {
            Answer::Page(page) => break (link, page),
            Answer::Redirect(_) if started.elapsed() >= timeout => {
                return Err(ClientError::ReadUnconfirmed { target: target.to_string(), waited: timeout })
            }
            Answer::Redirect(Some(leader)) => address = address::parse(&leader)?,
            Answer::Redirect(None) => {
                address = home;
                sleep(RETRY_PAUSE);
            }
        }
    };
    let Page { first_id, last_id, commands } = first;
    let end = to_id.map_or(last_id, |to_id| to_id.min(last_id));
    let start = match last {
        // The newest N: what the node trimmed is left out (as `query` leaves it out).
        Some(n) => from_id.max(last_id.saturating_sub(n) + 1).max(first_id),
        None => from_id,
    };
    let mut read: Vec<CommandRecord> = commands.into_iter().filter(|command| command.id <= end).collect();
    let mut next = read.last().map_or(start, |command| command.id + 1);
    while next <= end {
        // Later pages only extend what the first (confirmed) one established.
        let Answer::Page(page) = ask(&mut link, next, page_max(next, Some(end)), false)? else {
            unreachable!("only a linearizable read is redirected")
        };
        if page.commands.is_empty() {
            let reason = format!("answered no command at ID {next}, though its last is {}", page.last_id);
            return Err(ClientError::Failed { address: link.address(), reason });
        }
        read.extend(page.commands.into_iter().filter(|command| command.id <= end));
        next = read.last().map_or(next, |command| command.id + 1);
    }
    Ok(ReadLog { first_id, last_id, commands: read })
}

/// Follows the log from command `from_id` on (`None`: from the next command to commit), asking
/// `targets` and every member they name. See [`Follow`].
pub fn follow(targets: &[&str], from_id: Option<u64>, poll: Duration) -> Result<Follow, ClientError> {
    let mut members = Vec::new();
    for target in targets {
        let address = address::parse(target)?;
        if !members.contains(&address) {
            members.push(address);
        }
    }
    if members.is_empty() {
        return Err(ClientError::Address(AddressError { text: String::new() }));
    }
    Ok(Follow {
        members,
        current: 0,
        link: None,
        next_id: from_id.map(|id| id.max(1)),
        poll,
        batch_wait_max: BATCH_WAIT_MAX,
        unreachable_after: UNREACHABLE_AFTER,
        unanswered_since: None,
        idle_since: Instant::now(),
        trimmed: Vec::new(),
        last_error: None,
    })
}

/// A reader that follows the log as it commits (`tail -f`): each [`Follow::next_batch`]
/// returns the committed commands after the last one returned, in ID order, with no gap and
/// no duplicate, whichever member answers. It reads from one member at a time (plain reads:
/// committed commands are the same on every node); when that member fails, it tries the
/// others it knows (the targets, and the members their status reports list), and when it has
/// had nothing new for a while it asks the others whether they have more. Every wait is
/// bounded.
#[derive(Debug)]
pub struct Follow {
    /// Every member known, the targets first; learned ones are added, never dropped.
    members: Vec<SocketAddr>,
    /// The member read from (an index into `members`), and the link to it once open.
    current: usize,
    link: Option<Link>,
    /// The ID of the next command to return: one past the last returned. `None` until the
    /// first answer when following from the end.
    next_id: Option<u64>,
    /// Pause between polls that found nothing new.
    poll: Duration,
    batch_wait_max: Duration,
    unreachable_after: Duration,
    /// Since when no member has answered; `None` while the current one does.
    unanswered_since: Option<Instant>,
    /// Since when the current member has had nothing new.
    idle_since: Instant,
    /// The members that answered that they trimmed `next_id` (with their first ID), since the
    /// last member that held it.
    trimmed: Vec<(SocketAddr, u64)>,
    last_error: Option<ClientError>,
}

impl Follow {
    /// Report [`ClientError::Unreachable`] once no member has answered for this long (default
    /// 10 s). The next call tries again for as long.
    pub fn unreachable_after(mut self, after: Duration) -> Follow {
        self.unreachable_after = after;
        self
    }

    /// Return an empty batch once nothing new has come for this long (default 1 s).
    pub fn batch_wait_max(mut self, wait: Duration) -> Follow {
        self.batch_wait_max = wait;
        self
    }

    /// The ID of the next command to return (`None` until the first answer when following
    /// from the end).
    pub fn next_id(&self) -> Option<u64> {
        self.next_id
    }

    /// The member read from now.
    pub fn address(&self) -> SocketAddr {
        self.members[self.current]
    }

    /// The committed commands after the last one returned, in ID order: at least one, or none
    /// after the batch wait (1 s) passed with nothing new. Errors: no member answered for the
    /// `unreachable_after` time (call again to keep trying); every member that answered
    /// trimmed the next ID ([`ClientError::Trimmed`]: following on would skip commands).
    pub fn next_batch(&mut self) -> Result<Vec<CommandRecord>, ClientError> {
        let started = Instant::now();
        loop {
            match self.poll_current() {
                Ok(commands) if !commands.is_empty() => return Ok(commands),
                Ok(_) => {
                    if self.idle_since.elapsed() >= IDLE_PROBE_AFTER {
                        self.move_to_most_advanced();
                    }
                    if started.elapsed() >= self.batch_wait_max {
                        return Ok(Vec::new());
                    }
                    sleep(self.poll);
                }
                Err(error) => self.on_failure(error)?,
            }
        }
    }

    /// One request to the current member: the commands from `next_id` on.
    fn poll_current(&mut self) -> Result<Vec<CommandRecord>, ClientError> {
        let address = self.members[self.current];
        if self.link.is_none() {
            self.link = Some(Link::open(address, CALL_TIMEOUT)?);
            self.learn_members(address);
            self.idle_since = Instant::now();
        }
        let link = self.link.as_mut().expect("opened above");
        let from_id = self.next_id.unwrap_or(u64::MAX);
        let Answer::Page(page) = ask(link, from_id, QUERY_ENTRIES_MAX, false)? else {
            unreachable!("only a linearizable read is redirected")
        };
        self.unanswered_since = None;
        self.trimmed.clear();
        self.last_error = None;
        let Some(next_id) = self.next_id else {
            // Following from the end: everything committed so far is left out.
            self.next_id = Some(page.last_id + 1);
            return Ok(Vec::new());
        };
        if let Some(last) = page.commands.last() {
            assert_eq!(page.commands[0].id, next_id, "ask() checked the page starts where asked");
            self.next_id = Some(last.id + 1);
            self.idle_since = Instant::now();
        }
        Ok(page.commands)
    }

    /// The current member failed: move to the next one, unless every member trimmed the next
    /// ID or none has answered for too long.
    fn on_failure(&mut self, error: ClientError) -> Result<(), ClientError> {
        let address = self.members[self.current];
        self.link = None;
        if let ClientError::Trimmed { first_id, .. } = error {
            if !self.trimmed.iter().any(|(member, _)| *member == address) {
                self.trimmed.push((address, first_id));
            }
            if self.trimmed.len() >= self.members.len() {
                self.trimmed.clear();
                return Err(error);
            }
        }
        let since = *self.unanswered_since.get_or_insert_with(Instant::now);
        if self.last_error.is_none() {
            info!("reading from {address} failed ({error}); trying the other members");
        }
        self.last_error = Some(error);
        if since.elapsed() >= self.unreachable_after {
            self.unanswered_since = None;
            return Err(ClientError::Unreachable {
                members: self.members.clone(),
                waited: since.elapsed(),
                last: self.last_error.take().map(Box::new),
            });
        }
        self.current = (self.current + 1) % self.members.len();
        sleep(FAILOVER_PAUSE);
        Ok(())
    }

    /// Adds the members `address`'s status lists (its configuration) to those known; a
    /// status that does not come is no error (the log reads are what matter).
    fn learn_members(&mut self, address: SocketAddr) {
        let Ok(report) = client::status(&address.to_string(), CALL_TIMEOUT) else {
            return;
        };
        for member in report.members {
            // Members' addresses are as the nodes were started (`-a`): no name to resolve.
            if let Ok(member) = member.address.parse::<SocketAddr>() {
                if !self.members.contains(&member) {
                    self.members.push(member);
                }
            }
        }
    }

    /// The current member has had nothing new for a while: if another member has committed
    /// commands past the next ID, read from it instead (the current one may be cut off from
    /// the leader, or removed from the cluster).
    fn move_to_most_advanced(&mut self) {
        self.idle_since = Instant::now();
        let Some(next_id) = self.next_id else {
            return;
        };
        let mut best: Option<(usize, u64)> = None;
        for (k, &member) in self.members.iter().enumerate() {
            if k == self.current {
                continue;
            }
            let last_id = Link::open(member, CALL_TIMEOUT / 4)
                .and_then(|mut link| ask(&mut link, u64::MAX, 1, false))
                .map_or(0, |answer| match answer {
                    Answer::Page(page) => page.last_id,
                    Answer::Redirect(_) => 0,
                });
            if last_id >= next_id && best.is_none_or(|(_, best)| last_id > best) {
                best = Some((k, last_id));
            }
        }
        if let Some((k, last_id)) = best {
            let (from, to) = (self.members[self.current], self.members[k]);
            info!("{from} has nothing after ID {}, {to} has up to {last_id}: reading from {to}", next_id - 1);
            self.current = k;
            self.link = None;
        }
    }
}

/// One answer to `ReadCommands`.
#[derive(Debug)]
struct Page {
    first_id: u64,
    last_id: u64,
    commands: Vec<CommandRecord>,
}

#[derive(Debug)]
enum Answer {
    Page(Page),
    /// A linearizable read at a node that does not lead: the leader, if it knows one.
    Redirect(Option<String>),
}

/// Asks for up to `max` commands from `from_id` on, and checks the answer starts at `from_id`
/// and runs on with no gap (a node that broke that would make a follower skip or repeat).
fn ask(link: &mut Link, from_id: u64, max: u32, linearizable: bool) -> Result<Answer, ClientError> {
    let address = link.address();
    let from_id = from_id.max(1);
    let answer = link
        .call(&Frame::ReadCommands { from_id, max, linearizable })
        .map_err(|error| ClientError::Io { doing: "reading commands from", address, error })?;
    match answer {
        Frame::CommandsResult { first_id, last_id, commands } => {
            let in_order = commands.iter().enumerate().all(|(k, command)| {
                Some(command.id) == from_id.checked_add(k as u64) && command.id <= last_id
            });
            if !in_order {
                let reason = format!("answered commands from ID {from_id} with a gap or out of order");
                return Err(ClientError::Failed { address, reason });
            }
            Ok(Answer::Page(Page { first_id, last_id, commands }))
        }
        Frame::Redirect { leader } if linearizable => Ok(Answer::Redirect(leader)),
        Frame::Failed { reason } => Err(trimmed_or_failed(link, from_id, reason)),
        other => Err(ClientError::UnexpectedAnswer { address, frame: other.name() }),
    }
}

/// A refused read: [`ClientError::Trimmed`] if the node's log now starts after `from_id`
/// (asked again to know it, rather than reading its words), else its reason.
fn trimmed_or_failed(link: &mut Link, from_id: u64, reason: String) -> ClientError {
    let address = link.address();
    match link.call(&Frame::ReadCommands { from_id: u64::MAX, max: 1, linearizable: false }) {
        Ok(Frame::CommandsResult { first_id, .. }) if from_id < first_id => {
            ClientError::Trimmed { address, from_id, first_id }
        }
        _ => ClientError::Failed { address, reason },
    }
}

/// How many commands to ask for from `from_id` to reach `end` (at most a full page).
fn page_max(from_id: u64, end: Option<u64>) -> u32 {
    let wanted = end.map_or(u64::MAX, |end| end.saturating_sub(from_id).saturating_add(1));
    wanted.clamp(1, u64::from(QUERY_ENTRIES_MAX)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_ask_for_what_is_left_of_the_range() {
        assert_eq!(page_max(1, Some(20)), 20);
        assert_eq!(page_max(5, Some(5)), 1);
        assert_eq!(page_max(7, Some(5)), 1, "at least one");
        assert_eq!(page_max(1, None), QUERY_ENTRIES_MAX);
        assert_eq!(page_max(u64::MAX, Some(3)), 1);
    }

    #[test]
    fn follow_needs_a_target_and_knows_each_address_once() {
        assert!(follow(&[], None, Duration::from_millis(20)).is_err());
        assert!(follow(&["nonsense"], None, Duration::from_millis(20)).is_err());
        let follow = follow(&["127.0.0.1:1", "127.0.0.1:1"], Some(0), Duration::from_millis(20)).unwrap();
        assert_eq!(follow.members.len(), 1);
        assert_eq!(follow.next_id(), Some(1), "IDs start at 1");
    }

    #[test]
    fn no_member_answering_is_reported_within_the_bound() {
        // A port nothing listens on (bound, then released).
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let target = format!("127.0.0.1:{port}");
        let mut follow = follow(&[&target], Some(1), Duration::from_millis(20))
            .unwrap()
            .unreachable_after(Duration::from_millis(300));
        let started = Instant::now();
        let error = follow.next_batch().unwrap_err();
        assert!(matches!(error, ClientError::Unreachable { .. }), "{error}");
        assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());
        assert!(error.to_string().starts_with("no member answered within"), "{error}");
        assert_eq!(follow.next_id(), Some(1), "nothing skipped");
    }
}
