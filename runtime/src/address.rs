//! Node addresses as users type them (`127.0.0.1:8080`, `localhost:8080`): the one parser
//! behind the CLI's flags and the client's targets.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};

/// Text that names no socket address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddressError {
    /// The text as given.
    pub text: String,
}

impl fmt::Display for AddressError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} is not an address like 127.0.0.1:8080", self.text)
    }
}

impl std::error::Error for AddressError {}

/// The first socket address `text` names: `ip:port`, or `host:port` resolved by the system.
pub fn parse(text: &str) -> Result<SocketAddr, AddressError> {
    text.to_socket_addrs()
        .ok()
        .and_then(|mut addresses| addresses.next())
        .ok_or_else(|| AddressError { text: text.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ip_and_port_and_names_what_is_wrong() {
        assert_eq!(parse("127.0.0.1:8080"), Ok(SocketAddr::from(([127, 0, 0, 1], 8080))));
        let error = parse("nonsense").unwrap_err();
        assert_eq!(error.to_string(), r#""nonsense" is not an address like 127.0.0.1:8080"#);
        assert!(parse("127.0.0.1").is_err(), "a port is required");
    }
}
