//! Protections at the node's edge against clients that have not proven who
//! they are, or that guess: connections counted per source address, what a
//! connection remembers between its requests (has it authenticated?), a
//! bound on password hashing, and login throttling per account and per
//! source.
//!
//! Everything here is node-local and in memory, on purpose. Failed logins
//! are not replicated: putting each one through Raft would turn every wrong
//! guess into a durable write on every node (an attacker could then fill the
//! log), and the throttle must answer before any work is spent. The cost is
//! that a client spreading guesses over N nodes gets N times the rate, and a
//! node restart forgets the counts; both stay bounded by the backoff on each
//! node. Memory is bounded: each map holds at most `login_tracked_max`
//! entries, entries are forgotten `login_backoff_max_ms` after their last
//! failure or block, and past the bound the least restrictive entries are
//! dropped first (so a flood of one-off guesses does not free an account
//! that is being guessed at).
//!
//! A source is an IPv4 address, or the /64 prefix of an IPv6 address (one
//! host usually holds a whole /64, so counting single IPv6 addresses would
//! bound nothing).

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use caddy_core::CaddyError;
use caddy_core::identity::{Email, TenantId};
use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;

use crate::config::Limits;

/// The unit a client is counted by: an IPv4 address, or an IPv6 /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Source(IpAddr);

impl Source {
    /// The source `ip` belongs to (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn of(ip: IpAddr) -> Source {
        match ip {
            IpAddr::V4(_) => Source(ip),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Source(IpAddr::V4(v4)),
                None => {
                    let s = v6.segments();
                    Source(IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0)))
                }
            },
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            IpAddr::V4(v4) => write!(f, "{v4}"),
            IpAddr::V6(v6) => write!(f, "{v6}/64"),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

// ----- connections per source -----

/// Open connections per source, at most `max` each. The map holds only
/// sources with an open connection, so it is bounded by the node's
/// connection limit.
pub struct SourceLimit {
    max: usize,
    open: Mutex<HashMap<Source, usize>>,
}

/// One connection's place in its source's count; released on drop.
pub struct SourceSlot {
    limit: Arc<SourceLimit>,
    source: Source,
}

impl SourceLimit {
    /// A limit of `max` connections per source.
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self { max, open: Mutex::new(HashMap::new()) })
    }

    /// The most connections one source may hold.
    pub fn max(&self) -> usize {
        self.max
    }

    /// A slot for one more connection from `source`, unless it holds `max`.
    pub fn acquire(self: &Arc<Self>, source: Source) -> Option<SourceSlot> {
        let mut open = lock(&self.open);
        let count = open.entry(source).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(SourceSlot { limit: self.clone(), source })
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        lock(&self.open).len()
    }
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut open = lock(&self.limit.open);
        if let Some(count) = open.get_mut(&self.source) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.source);
            }
        }
    }
}

// ----- one connection -----

/// What a request's handler knows about the connection it arrived on.
#[derive(Default)]
pub struct Peer {
    addr: Option<SocketAddr>,
    authenticated: AtomicBool,
    proved: Notify,
}

impl Peer {
    /// A connection from `addr` (`None`: not known, e.g. in-process).
    pub fn new(addr: Option<SocketAddr>) -> Self {
        Self { addr, authenticated: AtomicBool::new(false), proved: Notify::new() }
    }

    /// The client's address.
    pub fn addr(&self) -> Option<SocketAddr> {
        self.addr
    }

    /// The client's source, for per-source limits.
    pub fn source(&self) -> Option<Source> {
        self.addr.map(|a| Source::of(a.ip()))
    }

    /// Records that a request on this connection presented a working
    /// credential (or logged in); the connection is past its credential
    /// deadline for good.
    pub fn mark_authenticated(&self) {
        if !self.authenticated.swap(true, Ordering::SeqCst) {
            self.proved.notify_one();
        }
    }

    /// True once [`Self::mark_authenticated`] was called.
    pub fn is_authenticated(&self) -> bool {
        self.authenticated.load(Ordering::SeqCst)
    }

    /// Resolves when the connection becomes authenticated (at once if it
    /// became so since the last call).
    pub async fn became_authenticated(&self) {
        self.proved.notified().await;
    }
}

// ----- password hashing -----

/// What a hash costs before any has been measured.
const FIRST_HASH_ESTIMATE: Duration = Duration::from_millis(50);
/// Bounds of the retry advice given when the queue is full.
const MIN_RETRY: Duration = Duration::from_millis(100);
const MAX_RETRY: Duration = Duration::from_secs(30);

/// Bounds password hashing and verification (argon2id: 19 MiB and tens of
/// milliseconds of a core each): at most `slots` run at once, on blocking
/// threads; at most `queue` more wait, in arrival order; past that a request
/// is refused with `resource_exhausted` and a retry-after of about the time
/// the queue takes to drain.
pub struct HashGate {
    slots: Arc<Semaphore>,
    size: usize,
    queue: usize,
    waiting: AtomicUsize,
    /// Moving average of one hash's duration, in microseconds.
    average_us: AtomicU64,
}

/// A place in the hash queue; given back on drop (also when the waiting
/// request is cancelled).
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl HashGate {
    /// A gate running `slots` hashes at once (at least one) with `queue` waiting.
    pub fn new(slots: usize, queue: usize) -> Self {
        let size = slots.max(1);
        Self {
            slots: Arc::new(Semaphore::new(size)),
            size,
            queue,
            waiting: AtomicUsize::new(0),
            average_us: AtomicU64::new(FIRST_HASH_ESTIMATE.as_micros() as u64),
        }
    }

    /// Runs `work` (a hash or a verification) on a blocking thread once a
    /// slot is free. The slot is held until `work` returns, even if the
    /// caller stops waiting, so the bound holds for threads, not requests.
    pub async fn run<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> Result<T, CaddyError> {
        let permit = match self.slots.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                let _waiting = self.enqueue()?;
                self.slots
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(|_| CaddyError::unavailable("password hashing stopped; retry"))?
            }
        };
        let started = std::time::Instant::now();
        let out = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            work()
        })
        .await
        .map_err(|e| CaddyError::internal(format!("password hashing task: {e}")))?;
        self.record(started.elapsed());
        Ok(out)
    }

    fn enqueue(&self) -> Result<Waiting<'_>, CaddyError> {
        let ahead = self.waiting.fetch_add(1, Ordering::SeqCst);
        let waiting = Waiting(&self.waiting);
        if ahead >= self.queue {
            drop(waiting);
            metrics::counter!("caddy_password_hashes_refused_total").increment(1);
            return Err(CaddyError::exhausted(format!(
                "this node is busy checking passwords ({} running, {ahead} waiting); retry later",
                self.size
            ))
            .retry_after(self.drain_estimate(ahead)));
        }
        Ok(waiting)
    }

    /// About how long the hashes running and waiting now take to finish.
    fn drain_estimate(&self, waiting: usize) -> Duration {
        let average = Duration::from_micros(self.average_us.load(Ordering::Relaxed));
        let rounds = (waiting + self.size).div_ceil(self.size) as u32;
        average.saturating_mul(rounds).clamp(MIN_RETRY, MAX_RETRY)
    }

    fn record(&self, took: Duration) {
        let sample = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let old = self.average_us.load(Ordering::Relaxed);
        // A racing update may be lost; the estimate only shapes advice.
        let new = old - old / 8 + sample / 8;
        self.average_us.store(new.max(1), Ordering::Relaxed);
    }
}

// ----- login throttling -----

/// How failed logins slow the next ones down.
#[derive(Debug, Clone)]
pub struct ThrottlePolicy {
    /// Failures for one account before each further attempt must wait.
    pub account_failures: u32,
    /// Failures from one source before each further attempt must wait.
    pub source_failures: u32,
    /// The first wait; it doubles with each further failure.
    pub base: Duration,
    /// The longest wait, and how long after its last failure (or the end of
    /// its wait) an account or source is forgotten.
    pub max: Duration,
    /// Most accounts, and most sources, tracked.
    pub capacity: usize,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Settled failures.
    failures: u32,
    /// Attempts being checked right now.
    pending: u32,
    /// When the last failure settled.
    last: Instant,
    /// No new attempt before this.
    blocked_until: Instant,
}

impl Entry {
    fn forgotten_at(&self, policy: &ThrottlePolicy) -> Instant {
        self.last.max(self.blocked_until) + policy.max
    }
}

/// Why an attempt may not start yet.
struct Refusal {
    wait: Duration,
    in_flight: bool,
}

/// Failure counts of one kind of key (accounts or sources).
struct Tracker<K> {
    entries: HashMap<K, Entry>,
    allowed: u32,
}

impl<K: Eq + Hash + Clone> Tracker<K> {
    fn new(allowed: u32) -> Self {
        Self { entries: HashMap::new(), allowed: allowed.max(1) }
    }

    fn live(&self, key: &K, now: Instant, policy: &ThrottlePolicy) -> Option<&Entry> {
        self.entries.get(key).filter(|e| e.pending > 0 || now < e.forgotten_at(policy))
    }

    /// Whether `key` may start an attempt now. Besides waiting out a block,
    /// at most as many attempts may be checked at once as failures remain
    /// allowed (at least one), so that concurrent guesses cannot all slip
    /// past the check before the first of them fails.
    fn check(&self, key: &K, now: Instant, policy: &ThrottlePolicy) -> Result<(), Refusal> {
        let Some(e) = self.live(key, now, policy) else { return Ok(()) };
        if now < e.blocked_until {
            return Err(Refusal { wait: e.blocked_until - now, in_flight: false });
        }
        if e.pending >= self.allowed.saturating_sub(e.failures).max(1) {
            return Err(Refusal { wait: policy.base, in_flight: true });
        }
        Ok(())
    }

    fn start(&mut self, key: &K, now: Instant, policy: &ThrottlePolicy) {
        let failures = self.live(key, now, policy).map_or(0, |e| e.failures);
        if !self.entries.contains_key(key) && self.entries.len() >= policy.capacity {
            self.make_room(now, policy);
        }
        let entry =
            self.entries.entry(key.clone()).or_insert(Entry { failures: 0, pending: 0, last: now, blocked_until: now });
        entry.failures = failures;
        entry.pending = entry.pending.saturating_add(1);
    }

    /// One attempt failed: once the allowed failures are used up, the next
    /// attempt must wait, twice as long after each further failure.
    fn fail(&mut self, key: &K, now: Instant, policy: &ThrottlePolicy) {
        let entry =
            self.entries.entry(key.clone()).or_insert(Entry { failures: 0, pending: 1, last: now, blocked_until: now });
        entry.pending = entry.pending.saturating_sub(1);
        entry.failures = entry.failures.saturating_add(1);
        entry.last = now;
        if entry.failures >= self.allowed {
            let doublings = entry.failures - self.allowed;
            let wait = 2u32.checked_pow(doublings).map_or(policy.max, |f| policy.base.saturating_mul(f));
            entry.blocked_until = now + wait.min(policy.max);
        }
    }

    /// One attempt ended without failing; with `reset`, the key's failures
    /// are forgiven too.
    fn finish(&mut self, key: &K, reset: bool) {
        if let Some(entry) = self.entries.get_mut(key) {
            entry.pending = entry.pending.saturating_sub(1);
            if reset {
                entry.failures = 0;
                entry.blocked_until = entry.last;
            }
            if entry.failures == 0 && entry.pending == 0 {
                self.entries.remove(key);
            }
        }
    }

    /// Drops forgotten entries; if that is not enough, the least
    /// restrictive eighth (fewest failures, then soonest forgotten), so the
    /// next inserts do not each scan the map again.
    fn make_room(&mut self, now: Instant, policy: &ThrottlePolicy) {
        self.entries.retain(|_, e| e.pending > 0 || now < e.forgotten_at(policy));
        if self.entries.len() < policy.capacity {
            return;
        }
        let mut ranked: Vec<(u32, Instant, K)> =
            self.entries.iter().map(|(k, e)| (e.failures, e.forgotten_at(policy), k.clone())).collect();
        let evict = (ranked.len() / 8).max(1);
        ranked.select_nth_unstable_by(evict - 1, |a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        for (_, _, key) in ranked.into_iter().take(evict) {
            self.entries.remove(&key);
        }
        metrics::counter!("caddy_login_throttle_evictions_total").increment(evict as u64);
    }
}

type Account = (TenantId, Email);

/// Failed-login counts per account (tenant and email) and per source.
pub struct LoginThrottle {
    policy: ThrottlePolicy,
    accounts: Mutex<Tracker<Account>>,
    sources: Mutex<Tracker<Source>>,
}

/// One login attempt being checked. [`LoginAttempt::failed`] counts a
/// failure for its account and source, [`LoginAttempt::succeeded`] forgives
/// the account's failures (not the source's: a success of its own must not
/// wipe the guesses it made at other accounts), and dropping it unsettled
/// (an error, a timeout: no verdict reached the client) counts nothing.
pub struct LoginAttempt<'a> {
    throttle: &'a LoginThrottle,
    account: Account,
    source: Option<Source>,
    settled: bool,
}

impl LoginThrottle {
    /// A throttle with `policy`.
    pub fn new(policy: ThrottlePolicy) -> Self {
        let accounts = Mutex::new(Tracker::new(policy.account_failures));
        let sources = Mutex::new(Tracker::new(policy.source_failures));
        Self { policy, accounts, sources }
    }

    /// Starts a login for `email` in `tenant` from `source`, or refuses it
    /// with `resource_exhausted` and how long to wait when the account or
    /// the source is throttled. A refused attempt costs nothing and counts
    /// as no failure.
    pub fn begin(
        &self,
        tenant: &TenantId,
        email: &Email,
        source: Option<Source>,
    ) -> Result<LoginAttempt<'_>, CaddyError> {
        let now = Instant::now();
        let account = (tenant.clone(), email.clone());
        // Lock order: accounts, then sources (everywhere).
        let mut accounts = lock(&self.accounts);
        let mut sources = lock(&self.sources);
        if let Some(source) = source
            && let Err(refusal) = sources.check(&source, now, &self.policy)
        {
            metrics::counter!("caddy_logins_throttled_total", "scope" => "source").increment(1);
            let what = if refusal.in_flight { "logins at once" } else { "failed logins" };
            return Err(CaddyError::exhausted(format!("too many {what} from {source}; wait before trying again"))
                .retry_after(refusal.wait));
        }
        if let Err(refusal) = accounts.check(&account, now, &self.policy) {
            metrics::counter!("caddy_logins_throttled_total", "scope" => "account").increment(1);
            let what = if refusal.in_flight { "logins at once" } else { "failed logins" };
            return Err(CaddyError::exhausted(format!(
                "too many {what} for {email} in tenant {tenant}; wait before trying again"
            ))
            .retry_after(refusal.wait));
        }
        accounts.start(&account, now, &self.policy);
        if let Some(source) = source {
            sources.start(&source, now, &self.policy);
        }
        Ok(LoginAttempt { throttle: self, account, source, settled: false })
    }

    #[cfg(test)]
    fn tracked(&self) -> (usize, usize) {
        (lock(&self.accounts).entries.len(), lock(&self.sources).entries.len())
    }
}

impl LoginAttempt<'_> {
    /// The password was wrong (or the account unknown).
    pub fn failed(mut self) {
        self.settled = true;
        let now = Instant::now();
        let policy = &self.throttle.policy;
        let mut accounts = lock(&self.throttle.accounts);
        let mut sources = lock(&self.throttle.sources);
        accounts.fail(&self.account, now, policy);
        if let Some(source) = &self.source {
            sources.fail(source, now, policy);
        }
    }

    /// The password was right.
    pub fn succeeded(mut self) {
        self.settled = true;
        self.settle(true);
    }

    fn settle(&self, reset_account: bool) {
        let mut accounts = lock(&self.throttle.accounts);
        let mut sources = lock(&self.throttle.sources);
        accounts.finish(&self.account, reset_account);
        if let Some(source) = &self.source {
            sources.finish(source, false);
        }
    }
}

impl Drop for LoginAttempt<'_> {
    fn drop(&mut self) {
        if !self.settled {
            self.settle(false);
        }
    }
}

// ----- the node's edge -----

/// The node-wide protections a request handler uses.
pub struct Edge {
    /// Bounds password hashing and verification.
    pub hashes: HashGate,
    /// Throttles logins after failures.
    pub logins: LoginThrottle,
}

impl Edge {
    /// Protections sized by `limits` (hash slots: one per core when 0).
    pub fn new(limits: &Limits) -> Self {
        let slots = match limits.max_concurrent_hashes {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        Self {
            hashes: HashGate::new(slots, limits.max_queued_hashes),
            logins: LoginThrottle::new(ThrottlePolicy {
                account_failures: limits.login_failures_per_account,
                source_failures: limits.login_failures_per_source,
                base: Duration::from_millis(limits.login_backoff_ms),
                max: Duration::from_millis(limits.login_backoff_max_ms),
                capacity: limits.login_tracked_max,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use caddy_core::ErrorCode;

    use super::*;

    fn policy() -> ThrottlePolicy {
        ThrottlePolicy {
            account_failures: 3,
            source_failures: 5,
            base: Duration::from_secs(1),
            max: Duration::from_secs(60),
            capacity: 1000,
        }
    }

    fn who(tenant: &str, email: &str) -> (TenantId, Email) {
        (TenantId::new(tenant).unwrap(), Email::parse(email).unwrap())
    }

    fn ip(text: &str) -> Option<Source> {
        Some(Source::of(text.parse().unwrap()))
    }

    /// Fails one login; returns the refusal's retry-after if it was refused.
    fn fail(t: &LoginThrottle, account: &(TenantId, Email), source: Option<Source>) -> Option<u64> {
        match t.begin(&account.0, &account.1, source) {
            Ok(attempt) => {
                attempt.failed();
                None
            }
            Err(e) => {
                assert_eq!(e.code, ErrorCode::ResourceExhausted, "{e}");
                Some(e.retry_after_ms.expect("a refusal says when to retry"))
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_account_is_throttled_with_doubling_waits_while_another_is_not() {
        let t = LoginThrottle::new(policy());
        let alice = who("acme", "alice@acme.test");
        let bob = who("acme", "bob@acme.test");
        let src = ip("192.0.2.1");
        // Three failures are allowed; the third starts a wait of 1 s.
        for _ in 0..3 {
            assert_eq!(fail(&t, &alice, src), None);
        }
        assert_eq!(fail(&t, &alice, src), Some(1000));
        let err = t.begin(&alice.0, &alice.1, src).err().unwrap();
        assert!(err.message.contains("alice@acme.test") && err.message.contains("acme"), "{err}");
        // Another account (and another tenant's same email) is not affected.
        t.begin(&bob.0, &bob.1, src).unwrap().succeeded();
        t.begin(&TenantId::new("globex").unwrap(), &alice.1, src).unwrap().succeeded();
        // After the wait one more guess is allowed, and a failure doubles the wait.
        tokio::time::advance(Duration::from_millis(999)).await;
        assert_eq!(fail(&t, &alice, None), Some(1));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(fail(&t, &alice, None), None);
        assert_eq!(fail(&t, &alice, None), Some(2000));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(fail(&t, &alice, None), None);
        assert_eq!(fail(&t, &alice, None), Some(4000));
        // The waits stop growing at the maximum.
        for _ in 0..10 {
            let wait = fail(&t, &alice, None).unwrap_or(0);
            tokio::time::advance(Duration::from_millis(wait)).await;
            assert_eq!(fail(&t, &alice, None), None);
        }
        assert_eq!(fail(&t, &alice, None), Some(60_000));
        // A success resets the account.
        tokio::time::advance(Duration::from_secs(60)).await;
        t.begin(&alice.0, &alice.1, None).unwrap().succeeded();
        for _ in 0..3 {
            assert_eq!(fail(&t, &alice, None), None);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_source_guessing_at_many_accounts_is_throttled_and_its_own_success_does_not_reset_it() {
        let t = LoginThrottle::new(policy());
        let guesser = ip("198.51.100.7");
        for i in 0..5 {
            assert_eq!(fail(&t, &who("acme", &format!("u{i}@acme.test")), guesser), None);
        }
        let err = t.begin(&TenantId::new("acme").unwrap(), &Email::parse("new@acme.test").unwrap(), guesser);
        let err = err.err().unwrap();
        assert_eq!(err.retry_after_ms, Some(1000));
        assert!(err.message.contains("198.51.100.7"), "{err}");
        // Other sources, and the same host's other /64s, are not affected.
        t.begin(&TenantId::new("acme").unwrap(), &Email::parse("new@acme.test").unwrap(), ip("198.51.100.8"))
            .unwrap()
            .failed();
        // A login of its own that succeeds does not wipe its failures.
        tokio::time::advance(Duration::from_secs(1)).await;
        let own = who("acme", "own@acme.test");
        t.begin(&own.0, &own.1, guesser).unwrap().succeeded();
        assert_eq!(fail(&t, &who("acme", "u9@acme.test"), guesser), None);
        assert_eq!(fail(&t, &who("acme", "u10@acme.test"), guesser), Some(2000));
        // IPv6 addresses count by /64.
        assert_eq!(ip("2001:db8:1:2:aaaa::1"), ip("2001:db8:1:2:bbbb::2"));
        assert_ne!(ip("2001:db8:1:2::1"), ip("2001:db8:1:3::1"));
        assert_eq!(ip("::ffff:192.0.2.1"), ip("192.0.2.1"));
        assert_eq!(ip("2001:db8:1:2::9").unwrap().to_string(), "2001:db8:1:2::/64");
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_guesses_cannot_all_pass_the_check_and_unsettled_attempts_cost_nothing() {
        let t = LoginThrottle::new(policy());
        let alice = who("acme", "alice@acme.test");
        // Three in flight at once use up the allowance; a fourth is refused
        // before any of them has failed, with a short wait.
        let a = t.begin(&alice.0, &alice.1, None).unwrap();
        let b = t.begin(&alice.0, &alice.1, None).unwrap();
        let c = t.begin(&alice.0, &alice.1, None).unwrap();
        let err = t.begin(&alice.0, &alice.1, None).err().unwrap();
        assert_eq!(err.retry_after_ms, Some(1000));
        assert!(err.message.contains("at once"), "{err}");
        // Attempts that end without a verdict (an error, a timeout) count nothing.
        drop((a, b, c));
        assert_eq!(t.tracked(), (0, 0));
        for _ in 0..3 {
            assert_eq!(fail(&t, &alice, None), None);
        }
        // Failures are forgotten a maximum wait after the last one.
        tokio::time::advance(Duration::from_secs(61)).await;
        for _ in 0..3 {
            assert_eq!(fail(&t, &alice, None), None);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn tracking_is_bounded_and_a_flood_of_one_off_guesses_does_not_free_a_throttled_account() {
        let t = LoginThrottle::new(ThrottlePolicy { capacity: 64, ..policy() });
        let alice = who("acme", "alice@acme.test");
        for _ in 0..3 {
            fail(&t, &alice, None);
        }
        assert!(fail(&t, &alice, None).is_some());
        for i in 0..1000 {
            fail(&t, &who("acme", &format!("spray{i}@acme.test")), ip(&format!("10.0.{}.{}", i / 250, i % 250)));
        }
        let (accounts, sources) = t.tracked();
        assert!(accounts <= 64 && sources <= 64, "{accounts} accounts, {sources} sources tracked");
        assert!(fail(&t, &alice, None).is_some(), "the guessed-at account is still throttled");
    }

    #[test]
    fn connections_are_counted_per_source_and_released() {
        let limit = SourceLimit::new(2);
        let a = ip("192.0.2.1").unwrap();
        let b = ip("192.0.2.2").unwrap();
        let first = limit.acquire(a).unwrap();
        let _second = limit.acquire(a).unwrap();
        assert!(limit.acquire(a).is_none(), "the third connection from one source is refused");
        let other = limit.acquire(b).unwrap();
        drop(first);
        let _third = limit.acquire(a).expect("a slot is released with its connection");
        drop(other);
        assert_eq!(limit.tracked(), 1, "sources without connections are forgotten");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hashing_runs_at_most_slots_at_once_and_refuses_past_the_queue_with_retry_advice() {
        let gate = Arc::new(HashGate::new(2, 3));
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let (release, held) = mpsc::channel::<()>();
        let held = Arc::new(Mutex::new(held));
        let mut tasks = Vec::new();
        for _ in 0..5 {
            let (gate, running, peak, held) = (gate.clone(), running.clone(), peak.clone(), held.clone());
            tasks.push(tokio::spawn(async move {
                gate.run(move || {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    let _ = lock(&held).recv();
                    running.fetch_sub(1, Ordering::SeqCst);
                })
                .await
            }));
        }
        // Two run, three wait: the queue is full.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while gate.waiting.load(Ordering::SeqCst) < 3 || running.load(Ordering::SeqCst) < 2 {
            assert!(std::time::Instant::now() < deadline, "the gate never filled");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let err = gate.run(|| ()).await.unwrap_err();
        assert_eq!(err.code, ErrorCode::ResourceExhausted, "{err}");
        let after = err.retry_after_ms.expect("retry advice");
        assert!((100..=30_000).contains(&after), "{after} ms");
        assert!(err.message.contains("busy"), "{err}");
        for _ in 0..5 {
            release.send(()).unwrap();
        }
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        assert_eq!(peak.load(Ordering::SeqCst), 2, "never more than the slots at once");
        assert_eq!(gate.waiting.load(Ordering::SeqCst), 0);
        gate.run(|| ()).await.expect("free again");
    }
}
