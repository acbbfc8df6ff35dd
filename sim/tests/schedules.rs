//! proptest: generated fault schedules on small clusters, checked by the same invariants.
//! A failure shrinks to a minimal schedule (proptest's shrinking over the fault list).

use proptest::prelude::*;
use sim::schedule::{Fault, MemberKind, MemberOp, Target, Timed};
use sim::{run, Options, Schedule, Trace};

const TICKS: u64 = 200;

fn fault(nodes: u64) -> impl Strategy<Value = Fault> {
    let node = 1..=nodes;
    let target = prop_oneof![node.clone().prop_map(Target::Node), Just(Target::Leader)];
    prop_oneof![
        target.clone().prop_map(Fault::Crash),
        Just(Fault::Restart),
        target.clone().prop_map(Fault::Pause),
        Just(Fault::Resume),
        target.clone().prop_map(Fault::Isolate),
        (0..MemberKind::ALL.len(), target, proptest::bool::weighted(0.1), any::<bool>()).prop_map(
            |(kind, to, force, on_election)| Fault::Member(MemberOp {
                kind: MemberKind::ALL[kind],
                to,
                force,
                on_election
            })
        ),
        proptest::collection::vec((node.clone(), node.clone()), 1..6).prop_map(Fault::Cut),
        Just(Fault::Heal),
        (0u64..3000).prop_map(Fault::Ambush),
        (node, 900u64..1100).prop_map(|(n, p)| Fault::Drift(n, p)),
    ]
}

fn schedule(nodes: u64) -> impl Strategy<Value = Schedule> {
    proptest::collection::vec((0..TICKS * 1000, fault(nodes)), 0..24).prop_map(|mut faults| {
        faults.sort_by_key(|(at, _)| *at);
        Schedule { faults: faults.into_iter().map(|(at, fault)| Timed { at, fault }).collect() }
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn generated_schedules_keep_every_check(seed in 0u64..1_000_000, nodes in 3u64..=5, schedule in schedule(5)) {
        let mut options = Options::from_seed(seed);
        options.apply(&format!("nodes={nodes} ticks={TICKS}")).unwrap();
        let schedule = Schedule {
            faults: schedule.faults.into_iter().filter(|t| match &t.fault {
                Fault::Crash(Target::Node(n)) | Fault::Pause(Target::Node(n)) | Fault::Isolate(Target::Node(n)) | Fault::Drift(n, _) => *n <= nodes,
                Fault::Member(MemberOp { to: Target::Node(n), .. }) => *n <= nodes,
                Fault::Cut(links) => links.iter().all(|&(a, b)| a <= nodes && b <= nodes),
                _ => true,
            }).collect(),
        };
        let result = run(&options, &schedule, Trace::Off);
        prop_assert!(result.violation.is_none(), "{}\n{}", options, result.violation.unwrap());
    }
}
