//! The deliberate bugs a run can plant (builds with the `bugs` feature): the core's protocol
//! bugs, the runtime driver's ordering bugs and the health check's bugs. Names are parsed here, at the edge, so a
//! misspelled name is an error rather than a run without the bug.

use replog_core::Bug;
use replog_runtime::driver::DriverBug;
use replog_runtime::metrics::MonitorBug;
use std::fmt;

/// One planted bug.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Planted {
    /// A protocol bug in the core.
    Core(Bug),
    /// An ordering bug in the runtime's driver.
    Driver(DriverBug),
    /// A bug in the runtime's health check (`metrics::Monitor`).
    Monitor(MonitorBug),
}

impl Planted {
    /// Every bug the simulator must catch.
    pub fn all() -> Vec<Planted> {
        let core = Bug::ALL.into_iter().map(Planted::Core);
        core.chain(DriverBug::ALL.into_iter().map(Planted::Driver))
            .chain(MonitorBug::ALL.into_iter().map(Planted::Monitor))
            .collect()
    }

    /// The bug's name on command lines and in schedule files.
    pub fn name(self) -> &'static str {
        match self {
            Planted::Core(bug) => bug.name(),
            Planted::Driver(bug) => bug.name(),
            Planted::Monitor(bug) => bug.name(),
        }
    }

    /// Bugs that cost availability rather than safety: caught as liveness failures.
    pub fn is_availability(self) -> bool {
        matches!(
            self,
            Planted::Core(Bug::PreVoteRaisesTerm | Bug::FixedElectionTimeout)
                | Planted::Monitor(MonitorBug::StallNeverCleared)
        )
    }

    /// The bug with this name, or an error listing the known ones.
    pub fn parse(name: &str) -> Result<Planted, String> {
        Planted::all().into_iter().find(|bug| bug.name() == name).ok_or_else(|| {
            let known: Vec<&str> = Planted::all().into_iter().map(Planted::name).collect();
            format!("unknown bug {name:?} (known: {})", known.join(", "))
        })
    }
}

impl fmt::Display for Planted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
