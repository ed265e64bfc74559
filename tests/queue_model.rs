//! Proptest model of the queue: random send / receive / ack / nack / extend /
//! advance-clock / flush / reopen (process kill) against a simple in-memory model.

mod common;

use std::time::Duration;

use common::sim_config;
use logqueue::sim::SimFs;
use logqueue::{Error, Log, ManualClock, Queue, QueueConfig, Receipt, Record};
use proptest::prelude::*;

const VT: i64 = 1000;
const MAX_DELIVERIES: u32 = 3;

#[derive(Clone, Debug)]
enum Op {
    Send(u8),
    SendDelayed(u16),
    Receive(u8),
    Ack(u8),
    Nack(u8, u16),
    Extend(u8, u16),
    DeadLetter(u8),
    Advance(u16),
    Flush,
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (1u8..4).prop_map(Op::Send),
        1 => (0u16..2000).prop_map(Op::SendDelayed),
        3 => (1u8..5).prop_map(Op::Receive),
        3 => any::<u8>().prop_map(Op::Ack),
        1 => (any::<u8>(), 0u16..1500).prop_map(|(i, d)| Op::Nack(i, d)),
        1 => any::<u8>().prop_map(|i| Op::Nack(i, 0)),
        1 => (any::<u8>(), 0u16..3000).prop_map(|(i, d)| Op::Extend(i, d)),
        1 => any::<u8>().prop_map(Op::DeadLetter),
        2 => (0u16..1500).prop_map(Op::Advance),
        1 => Just(Op::Flush),
        1 => Just(Op::Reopen),
    ]
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum M {
    /// Never read by the queue; held back until the time given, if any.
    New(Option<i64>),
    Leased {
        attempt: u32,
        deadline: i64,
    },
    Waiting {
        attempt: u32,
        at: i64,
    },
    Done,
}

struct Model {
    recs: Vec<M>,
    now: i64,
    dead: Vec<u64>,
    backoff: Vec<i64>,
}

impl Model {
    fn backoff(&self, attempt: u32) -> i64 {
        let n = (attempt as usize - 1).min(self.backoff.len().saturating_sub(1));
        self.backoff.get(n).copied().unwrap_or(0)
    }

    fn receive(&mut self, max: usize) -> Vec<(u64, u32)> {
        let mut due: Vec<(i64, u64, u32)> = self
            .recs
            .iter()
            .enumerate()
            .filter_map(|(o, m)| match *m {
                M::Leased { attempt, deadline } if deadline + self.backoff(attempt) <= self.now => {
                    Some((deadline + self.backoff(attempt), o as u64, attempt))
                }
                M::Waiting { attempt, at } if at <= self.now => Some((at, o as u64, attempt)),
                _ => None,
            })
            .collect();
        due.sort();
        let mut out = Vec::new();
        for (_, o, attempt) in due {
            if out.len() == max {
                break;
            }
            if attempt >= MAX_DELIVERIES {
                self.recs[o as usize] = M::Done;
                self.dead.push(o);
                continue;
            }
            // A lease recovered after a crash goes in a batch of its own.
            let recovered = matches!(self.recs[o as usize], M::Waiting { attempt, at } if attempt > 0 && at == i64::MIN);
            if recovered && !out.is_empty() {
                break;
            }
            self.recs[o as usize] = M::Leased {
                attempt: attempt + 1,
                deadline: self.now + VT,
            };
            out.push((o, attempt + 1));
            if recovered {
                return out;
            }
        }
        for o in 0..self.recs.len() {
            if out.len() == max {
                break;
            }
            if let M::New(until) = self.recs[o] {
                if let Some(at) = until.filter(|&u| u > self.now) {
                    self.recs[o] = M::Waiting { attempt: 0, at };
                    continue;
                }
                self.recs[o] = M::Leased {
                    attempt: 1,
                    deadline: self.now + VT,
                };
                out.push((o as u64, 1));
            }
        }
        out
    }

    fn current(&self, r: Receipt) -> bool {
        matches!(self.recs.get(r.offset as usize),
            Some(M::Leased { attempt, .. }) if *attempt == r.attempt)
    }
}

fn cfg(backoff: &[i64]) -> QueueConfig {
    QueueConfig {
        backoff: backoff
            .iter()
            .map(|&ms| Duration::from_millis(ms as u64))
            .collect(),
        visibility_timeout: Duration::from_millis(VT as u64),
        max_visibility: Duration::from_millis(2000),
        max_deliveries: Some(MAX_DELIVERIES),
        journal_bytes: 4096,
        ..QueueConfig::default()
    }
}

fn run(ops: Vec<Op>, backoff: Vec<i64>) {
    let fs = SimFs::new(0);
    let clock = ManualClock::new(0);
    let open = || {
        let log = Log::open("/log", sim_config(&fs, &clock, 4096)).unwrap();
        let q = Queue::open(&log, "m", cfg(&backoff)).unwrap();
        (log, q)
    };
    let (mut _log, mut q) = open();
    let mut m = Model {
        recs: Vec::new(),
        now: 0,
        dead: Vec::new(),
        backoff: backoff.clone(),
    };
    let mut receipts: Vec<Receipt> = Vec::new();
    let pick =
        |receipts: &Vec<Receipt>, i: u8| receipts.get(i as usize % receipts.len().max(1)).copied();
    for op in ops {
        match op {
            Op::Send(n) => {
                for _ in 0..n {
                    let o = q.send(Record::new("x")).unwrap();
                    assert_eq!(o, m.recs.len() as u64);
                    m.recs.push(M::New(None));
                }
            }
            Op::SendDelayed(ms) => {
                let o = q
                    .send_delayed(Record::new("later"), Duration::from_millis(ms.into()))
                    .unwrap();
                assert_eq!(o, m.recs.len() as u64);
                m.recs.push(M::New(Some(m.now + i64::from(ms))));
            }
            Op::Receive(max) => {
                let got: Vec<(u64, u32)> = q
                    .receive(max as usize, Duration::ZERO)
                    .unwrap()
                    .iter()
                    .map(|d| (d.receipt.offset, d.attempt))
                    .collect();
                assert_eq!(got, m.receive(max as usize));
                receipts.extend(
                    got.iter()
                        .map(|&(offset, attempt)| Receipt { offset, attempt }),
                );
            }
            Op::Ack(i) | Op::DeadLetter(i) | Op::Nack(i, _) | Op::Extend(i, _) => {
                let Some(r) = pick(&receipts, i) else {
                    continue;
                };
                let ok = m.current(r);
                let res = match op {
                    Op::Ack(_) => q.ack(&r),
                    Op::DeadLetter(_) => q.dead_letter(&r, "model"),
                    Op::Nack(_, d) => q.nack(&r, Duration::from_millis(d.into())),
                    Op::Extend(_, d) => q.extend(&r, Duration::from_millis(d.into())),
                    _ => unreachable!(),
                };
                // Beyond max_visibility (2 s): refused whatever the receipt, nothing
                // changes (issue 11; it used to be clamped).
                if matches!(op, Op::Nack(_, d) | Op::Extend(_, d) if d > 2000) {
                    assert!(matches!(res, Err(Error::InvalidArgument(_))), "{res:?}");
                    continue;
                }
                if ok {
                    res.unwrap();
                    let o = r.offset as usize;
                    m.recs[o] = match op {
                        Op::Ack(_) => M::Done,
                        Op::DeadLetter(_) => {
                            m.dead.push(r.offset);
                            M::Done
                        }
                        Op::Nack(_, d) => M::Waiting {
                            attempt: r.attempt,
                            at: m.now
                                + if d == 0 {
                                    m.backoff(r.attempt)
                                } else {
                                    i64::from(d)
                                },
                        },
                        Op::Extend(_, d) => M::Leased {
                            attempt: r.attempt,
                            deadline: m.now + i64::from(d),
                        },
                        _ => unreachable!(),
                    };
                } else {
                    assert!(matches!(res, Err(Error::StaleReceipt { .. })), "{res:?}");
                }
            }
            Op::Advance(ms) => {
                clock.advance(Duration::from_millis(ms.into()));
                m.now += i64::from(ms);
            }
            Op::Flush => q.flush().unwrap(),
            Op::Reopen => {
                fs.kill();
                drop(q);
                drop(_log);
                (_log, q) = open();
                for r in &mut m.recs {
                    if let M::Leased { attempt, .. } = *r {
                        *r = M::Waiting {
                            attempt,
                            at: i64::MIN,
                        };
                    }
                }
            }
        }
        let s = q.stats();
        let floor = m
            .recs
            .iter()
            .position(|r| *r != M::Done)
            .unwrap_or(m.recs.len());
        assert_eq!(s.ack_floor, floor as u64);
        let leased = m
            .recs
            .iter()
            .filter(|r| matches!(r, M::Leased { .. }))
            .count();
        assert_eq!(s.in_flight, leased as u64);
        assert_eq!(s.dead_lettered_total, m.dead.len() as u64);
        let delayed = m
            .recs
            .iter()
            .filter(|r| matches!(r, M::Waiting { attempt: 0, .. }))
            .count();
        assert_eq!(s.delayed, delayed as u64);
    }
    let dl: Vec<u64> = common::read_all(&q.dead_letters())
        .iter()
        .map(|r| {
            std::str::from_utf8(r.header("dlq.offset").unwrap())
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    assert_eq!(dl, m.dead);
}

proptest! {
    #![proptest_config(ProptestConfig {
        // PROPTEST_CASES asks for more.
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(64),
        ..ProptestConfig::default()
    })]
    #[test]
    fn queue_matches_model(
        ops in proptest::collection::vec(op(), 1..60),
        backoff in prop_oneof![
            Just(vec![]),
            Just(vec![300]),
            Just(vec![200, 700, 1500]),
        ],
    ) {
        run(ops, backoff);
    }
}
