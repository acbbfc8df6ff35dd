//! Outbound peer links: one connection a peer (by address), opened by this node, that carries
//! this node's Raft messages. It opens with a hello naming this node; a lost link is reopened with backoff.
//! Peers answer on their own outbound links (accepted in `clients.rs`), so nothing arrives here
//! but the close.

use crate::codec::Frame;
use crate::connection::Connection;
use crate::members::Members;
use crate::metrics::{Metrics, PeerTraffic};
use crate::tls::{self, Tls};
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use replog_core::{Message, NodeId};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

const RECONNECT_MIN: Duration = Duration::from_millis(20);
const RECONNECT_MAX: Duration = Duration::from_secs(1);
/// A link that was lost after carrying messages this long is reconnected at once; one that
/// failed sooner (a refused TLS handshake or certificate, a peer that closes every connection)
/// keeps backing off, so a peer that refuses us is not redialled 50 times a second.
const STABLE_AFTER: Duration = Duration::from_secs(2);

/// Every peer's outbound link, by address (a node's id is learned from its hello, or from a
/// configuration; bootstrap peers are dialled before their ids are known).
#[derive(Debug)]
pub struct Peers {
    links: BTreeMap<SocketAddr, Link>,
    /// The first frame of every link: who is calling.
    hello: Frame,
    next_token: usize,
    last_token: usize,
    /// Tokens of links forgotten, given to new ones first.
    free_tokens: Vec<Token>,
    metrics: Arc<Metrics>,
    /// With TLS, every link is a TLS session from these configurations.
    tls: Option<Arc<Tls>>,
}

#[derive(Debug)]
struct Link {
    /// The name the peer gave in its own hello, once it has called.
    name: Option<String>,
    token: Token,
    connection: Option<Connection>,
    /// The connection finished connecting and queued its hello.
    ready: bool,
    /// When the connection could first carry messages (with TLS: the handshake is over).
    /// Messages are queued only from then on.
    established_at: Option<Instant>,
    /// Why the last attempt failed, logged once until the reason changes or a link holds.
    last_failure: Option<String>,
    next_attempt: Instant,
    backoff: Duration,
    /// Messages dropped because the link was down or its queue full (Raft retransmits).
    dropped: u64,
    /// What was queued for it.
    traffic: PeerTraffic,
}

/// One link as the status reports it.
#[derive(Debug)]
pub struct LinkState<'a> {
    /// Its address.
    pub address: SocketAddr,
    /// The name it gave in its hello, once it has called.
    pub name: Option<&'a str>,
    /// Connected (with TLS: the handshake is over), hello queued.
    pub connected: bool,
    /// Messages dropped so far.
    pub messages_dropped: u64,
}

impl Peers {
    /// No links yet; links get tokens from `first_token` up to (not including) `last_token`;
    /// `hello` opens every link; traffic is counted in `metrics`.
    /// With `tls`, links are TLS.
    pub fn new(
        hello: Frame,
        first_token: Token,
        last_token: Token,
        metrics: Arc<Metrics>,
        tls: Option<Arc<Tls>>,
    ) -> Peers {
        Peers {
            links: BTreeMap::new(),
            hello,
            next_token: first_token.0,
            last_token: last_token.0,
            free_tokens: Vec::new(),
            metrics,
            tls,
        }
    }

    /// What new links say first (the node's configuration changed: a bootstrap).
    pub fn set_hello(&mut self, hello: Frame) {
        self.hello = hello;
    }

    /// Makes sure there is a link to `address` (dialled on the next `reconnect`).
    pub fn ensure(&mut self, address: SocketAddr) {
        if self.links.contains_key(&address) {
            return;
        }
        let token = match self.free_tokens.pop() {
            Some(token) => token,
            None if self.next_token < self.last_token => {
                self.next_token += 1;
                Token(self.next_token - 1)
            }
            None => return,
        };
        let link = Link {
            name: None,
            token,
            connection: None,
            ready: false,
            established_at: None,
            last_failure: None,
            next_attempt: Instant::now(),
            backoff: RECONNECT_MIN,
            dropped: 0,
            traffic: self.metrics.peer_traffic(address),
        };
        self.links.insert(address, link);
    }

    /// Queues a Raft message for its peer, or counts it dropped: Raft retransmits what is lost.
    /// A peer whose address is unknown is skipped.
    pub fn send(&mut self, message: Message, members: &Members) {
        let Some(address) = members.address_of(message.to) else {
            return;
        };
        self.ensure(address);
        let Some(link) = self.links.get_mut(&address) else {
            return;
        };
        match (&mut link.connection, link.established_at.is_some()) {
            (Some(connection), true) => match connection.queue_sized(&Frame::Raft(message)) {
                Some(bytes) => link.traffic.sent(bytes),
                None => link.dropped += 1, // over the queue limit
            },
            _ => link.dropped += 1, // not connected yet
        }
    }

    /// Starts connecting every link that is down and whose backoff has passed.
    pub fn reconnect(&mut self, registry: &Registry) {
        let now = Instant::now();
        for (address, link) in self.links.iter_mut() {
            if link.connection.is_some() || now < link.next_attempt {
                continue;
            }
            link.next_attempt = now + link.backoff;
            link.backoff = (link.backoff * 2).min(RECONNECT_MAX);
            match TcpStream::connect(*address) {
                Ok(mut stream) => {
                    if registry
                        .register(&mut stream, link.token, Interest::READABLE | Interest::WRITABLE)
                        .is_ok()
                    {
                        link.connection = Some(match &self.tls {
                            Some(tls) => Connection::with_tls(
                                stream,
                                tls::dial(&tls.configs().client, *address).into(),
                            ),
                            None => Connection::new(stream),
                        });
                        link.ready = false;
                    }
                }
                Err(error) => debug!("connecting to {address}: {error}"),
            }
        }
    }

    /// Handles readiness on a link's token: the connect completing (then the hello goes
    /// out), the TLS handshake going on, queued messages draining, or the close.
    pub fn on_event(&mut self, token: Token, registry: &Registry) {
        let Some((&id, link)) = self.links.iter_mut().find(|(_, link)| link.token == token) else {
            return;
        };
        let Some(connection) = link.connection.as_mut() else {
            return;
        };
        if !link.ready {
            match connection.stream.take_error() {
                Ok(None) if connection.stream.peer_addr().is_ok() => {
                    link.ready = true;
                    connection.queue(&self.hello);
                }
                Ok(None) => return, // still connecting
                _ => {
                    self.drop_link(id, registry, "connect failed");
                    return;
                }
            }
        }
        // Anything readable here is the TLS handshake or the close: peers answer on their own
        // links. Data would only pile up unread (a listener a hello pointed us at, streaming),
        // so it ends the link.
        let result = connection.read().and_then(|_| connection.flush());
        if let Err(closed) = result {
            self.drop_link(id, registry, &closed.to_string());
            return;
        }
        if connection.has_inbound() {
            self.drop_link(id, registry, "it sent data on a link it should only read");
            return;
        }
        if link.established_at.is_none() && connection.is_established() {
            link.established_at = Some(Instant::now());
            if link.last_failure.is_none() {
                info!("connected to peer {id}");
            } else {
                debug!("connected to peer {id}");
            }
        }
    }

    /// Writes what every connected link has queued, as far as the sockets take it.
    pub fn flush(&mut self, registry: &Registry) {
        let mut failed = Vec::new();
        for (&id, link) in self.links.iter_mut() {
            if let (Some(connection), true) = (link.connection.as_mut(), link.ready) {
                if connection.has_outbound() {
                    if let Err(closed) = connection.flush() {
                        failed.push((id, closed.to_string()));
                    }
                }
            }
        }
        for (id, why) in failed {
            self.drop_link(id, registry, &why);
        }
    }

    /// Remembers the name the peer at `address` gave in its hello (a node restarted under a
    /// new name replaces its old one in `replog_peer_info`).
    pub fn named(&mut self, address: SocketAddr, name: String) {
        if let Some(link) = self.links.get_mut(&address) {
            if let Some(old) = link.name.as_deref().filter(|&old| old != name) {
                self.metrics.peer_unnamed(address, old);
            }
            self.metrics.peer_named(address, &name);
            link.name = Some(name);
        }
    }

    /// Closes and forgets the links to addresses `keep` refuses (no member, no bootstrap peer,
    /// no caller connected now), with their metric series: what hellos created stays bounded
    /// by what is in use.
    pub fn retain(&mut self, keep: impl Fn(SocketAddr) -> bool, registry: &Registry) {
        let gone: Vec<SocketAddr> = self.links.keys().copied().filter(|&address| !keep(address)).collect();
        for address in gone {
            let mut link = self.links.remove(&address).expect("listed");
            if let Some(mut connection) = link.connection.take() {
                let _ = registry.deregister(&mut connection.stream);
            }
            self.metrics.forget_peer(address, link.name.as_deref());
            self.free_tokens.push(link.token);
            debug!("forgot the link to {address}: no member or caller there");
        }
    }

    /// The peer's name if it has called, else its address (`?` if unknown).
    pub fn display_name(&self, id: NodeId, members: &Members) -> String {
        let Some(address) = members.address_of(id) else {
            return crate::storage::id_text(id);
        };
        self.links.get(&address).and_then(|link| link.name.clone()).unwrap_or_else(|| address.to_string())
    }

    /// Whether the link to `address` is connected (with TLS: the handshake is over).
    pub fn is_connected(&self, address: SocketAddr) -> bool {
        self.links.get(&address).is_some_and(|link| link.established_at.is_some())
    }

    /// Every link's state, in address order.
    pub fn states(&self) -> impl Iterator<Item = LinkState<'_>> {
        self.links.iter().map(|(&address, link)| LinkState {
            address,
            name: link.name.as_deref(),
            connected: link.established_at.is_some(),
            messages_dropped: link.dropped,
        })
    }

    fn drop_link(&mut self, id: SocketAddr, registry: &Registry, why: &str) {
        let link = self.links.get_mut(&id).expect("known peer");
        if let Some(mut connection) = link.connection.take() {
            let _ = registry.deregister(&mut connection.stream);
        }
        let held = link.established_at.take().is_some_and(|at| at.elapsed() >= STABLE_AFTER);
        if held {
            // A working link was lost: dial again at once, and say so.
            link.backoff = RECONNECT_MIN;
            link.last_failure = None;
            info!("lost connection to peer {id}: {why}");
        } else if !link.ready {
            // Nothing listens there (yet): the peer is down or starting, as at any cluster start.
            debug!("connecting to peer {id}: {why}");
        } else if link.last_failure.as_deref() != Some(why) {
            warn!("cannot link to peer {id}: {why} (retrying, at most every {RECONNECT_MAX:?})");
            link.last_failure = Some(why.to_string());
        } else {
            debug!("cannot link to peer {id}: {why}");
        }
        link.ready = false;
    }
}
