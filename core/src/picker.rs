//! Choosing an instance of a service: readiness, pickers, zone preference and the
//! down-instance policy that a [`ServiceView`](crate::registry::ServiceView) applies.
//!
//! An instance is *available* when it is ready (its metadata says nothing else, see
//! [`Readiness`]), not marked down by [`ServiceView::note_error`](crate::registry::ServiceView::note_error)
//! and passes the view's filter. A pick chooses among the available instances of the
//! preferred zone when there is one, else among all available instances.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::registry::Instance;

/// The metadata key that carries an instance's [`Readiness`]. Absent means ready, so
/// instances registered by Go's `naming/endpoints` (or by hand) are ready.
pub const READINESS_KEY: &str = "readiness";
/// The metadata key a weighted pick reads by default.
pub const DEFAULT_WEIGHT_KEY: &str = "weight";
/// The metadata key zone preference reads by default.
pub const DEFAULT_ZONE_KEY: &str = "zone";

/// Whether an instance wants traffic. Written into the instance's metadata object under
/// [`READINESS_KEY`] (left out when ready, so a ready instance's value is exactly what Go
/// writes); discovery skips instances that are not ready unless told to include them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Readiness {
    /// Takes traffic (the default).
    #[default]
    Ready,
    /// Registered but not taking traffic yet (warming up).
    NotReady,
    /// Finishing its work before it leaves; takes no new traffic.
    Draining,
}

impl Readiness {
    /// `"ready"`, `"not_ready"` or `"draining"`: the name on the wire and in every face.
    pub fn as_str(self) -> &'static str {
        match self {
            Readiness::Ready => "ready",
            Readiness::NotReady => "not_ready",
            Readiness::Draining => "draining",
        }
    }

    /// Parse a name given by a caller; [`Error::InvalidArgument`] for anything else.
    pub fn parse(name: &str) -> Result<Readiness> {
        match name {
            "ready" => Ok(Readiness::Ready),
            "not_ready" => Ok(Readiness::NotReady),
            "draining" => Ok(Readiness::Draining),
            other => Err(Error::invalid(format!(
                "unknown readiness {other:?}: expected \"ready\", \"not_ready\" or \"draining\""
            ))),
        }
    }

    /// The readiness written in `metadata` (absent: ready; an unknown value: not ready).
    pub fn of(metadata: &serde_json::Value) -> Readiness {
        match metadata.get(READINESS_KEY) {
            None | Some(serde_json::Value::Null) => Readiness::Ready,
            Some(v) => v.as_str().and_then(|s| Readiness::parse(s).ok()).unwrap_or(Readiness::NotReady),
        }
    }
}

impl std::fmt::Display for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Readiness {
    type Err = Error;
    fn from_str(s: &str) -> Result<Readiness> {
        Readiness::parse(s)
    }
}

/// The metadata to write for `metadata` at `readiness`: the readiness key set (or removed
/// when ready) in a metadata object; `null` metadata becomes `{"readiness": ..}` when not
/// ready. A `weight` key, if present, must be a number >= 0.
pub(crate) fn wire_metadata(metadata: &serde_json::Value, readiness: Readiness) -> Result<serde_json::Value> {
    if let Some(w) = metadata.get(DEFAULT_WEIGHT_KEY) {
        match w.as_f64() {
            Some(x) if x.is_finite() && x >= 0.0 => {}
            _ => return Err(Error::invalid(format!("metadata \"weight\" must be a number >= 0, got {w}"))),
        }
    }
    match metadata {
        serde_json::Value::Object(m) => {
            let mut m = m.clone();
            match readiness {
                Readiness::Ready => {
                    // Metadata that held only the readiness was null before it.
                    if m.remove(READINESS_KEY).is_some() && m.is_empty() {
                        return Ok(serde_json::Value::Null);
                    }
                }
                r => {
                    m.insert(READINESS_KEY.into(), r.as_str().into());
                }
            }
            Ok(serde_json::Value::Object(m))
        }
        serde_json::Value::Null if readiness == Readiness::Ready => Ok(serde_json::Value::Null),
        serde_json::Value::Null => Ok(serde_json::json!({ READINESS_KEY: readiness.as_str() })),
        _ if readiness == Readiness::Ready => Ok(metadata.clone()),
        _ => Err(Error::invalid(format!(
            "readiness {readiness} needs metadata that is a JSON object or null (it is stored under {READINESS_KEY:?})"
        ))),
    }
}

/// How a [`ServiceView::pick`](crate::registry::ServiceView::pick) chooses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Picker {
    /// In turn, in id order (the default).
    #[default]
    RoundRobin,
    /// Uniformly at random.
    Random,
    /// The same instance for as long as it stays available; then another, in turn.
    Sticky,
    /// At random, in proportion to each instance's weight (a number >= 0 in its metadata
    /// under the view's weight key; 1 when absent or not such a number).
    Weighted,
}

impl Picker {
    /// `"round_robin"`, `"random"`, `"sticky"` or `"weighted"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Picker::RoundRobin => "round_robin",
            Picker::Random => "random",
            Picker::Sticky => "sticky",
            Picker::Weighted => "weighted",
        }
    }

    /// Parse a picker name; [`Error::InvalidArgument`] for an unknown one.
    pub fn parse(name: &str) -> Result<Picker> {
        match name {
            "round_robin" => Ok(Picker::RoundRobin),
            "random" => Ok(Picker::Random),
            "sticky" => Ok(Picker::Sticky),
            "weighted" => Ok(Picker::Weighted),
            other => Err(Error::invalid(format!(
                "unknown picker {other:?}: expected \"round_robin\", \"random\", \"sticky\" or \"weighted\""
            ))),
        }
    }
}

impl std::str::FromStr for Picker {
    type Err = Error;
    fn from_str(s: &str) -> Result<Picker> {
        Picker::parse(s)
    }
}

/// When an instance that callers report errors for is skipped (Apache Curator's
/// `DownInstancePolicy`): once `threshold` errors were noted within `period` of the
/// first one, the instance is down until `period` after that first error; then its
/// count starts again. Default: 2 errors, 30 s (Curator's defaults).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DownInstancePolicy {
    pub period: Duration,
    pub threshold: u32,
}

impl Default for DownInstancePolicy {
    fn default() -> Self {
        DownInstancePolicy { period: Duration::from_secs(30), threshold: 2 }
    }
}

impl DownInstancePolicy {
    /// A policy; [`Error::InvalidArgument`] for a zero period or threshold.
    pub fn new(period: Duration, threshold: u32) -> Result<DownInstancePolicy> {
        let p = DownInstancePolicy { period, threshold };
        p.check()?;
        Ok(p)
    }

    pub(crate) fn check(&self) -> Result<()> {
        if self.threshold == 0 {
            return Err(Error::invalid("down-instance threshold must be at least 1"));
        }
        if self.period.is_zero() {
            return Err(Error::invalid("down-instance period must be above 0"));
        }
        Ok(())
    }
}

/// A caller's test of an instance (kept by the view, so `Send + Sync`).
pub type InstanceFilter = Arc<dyn Fn(&Instance) -> bool + Send + Sync>;

/// How a [`ServiceView`](crate::registry::ServiceView) chooses instances; build with
/// [`ViewOptions::new`] and pass to [`ServiceView::start_with`](crate::registry::ServiceView::start_with).
#[derive(Clone)]
pub struct ViewOptions {
    pub picker: Picker,
    /// Also pick instances that are not ready or draining (default: skip them).
    pub include_not_ready: bool,
    pub down_policy: DownInstancePolicy,
    /// Pick from this zone while it has an available instance, else from every zone.
    pub prefer_zone: Option<String>,
    /// The metadata key holding an instance's zone (default `"zone"`).
    pub zone_key: String,
    /// The metadata key holding an instance's weight (default `"weight"`).
    pub weight_key: String,
    /// Only instances this returns `true` for are picked.
    pub filter: Option<InstanceFilter>,
}

impl Default for ViewOptions {
    fn default() -> Self {
        ViewOptions {
            picker: Picker::RoundRobin,
            include_not_ready: false,
            down_policy: DownInstancePolicy::default(),
            prefer_zone: None,
            zone_key: DEFAULT_ZONE_KEY.into(),
            weight_key: DEFAULT_WEIGHT_KEY.into(),
            filter: None,
        }
    }
}

impl std::fmt::Debug for ViewOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ViewOptions")
            .field("picker", &self.picker)
            .field("include_not_ready", &self.include_not_ready)
            .field("down_policy", &self.down_policy)
            .field("prefer_zone", &self.prefer_zone)
            .field("zone_key", &self.zone_key)
            .field("weight_key", &self.weight_key)
            .field("filter", &self.filter.is_some())
            .finish()
    }
}

impl ViewOptions {
    /// Round robin over ready instances, Curator's down-instance policy, no zone, no filter.
    pub fn new() -> Self {
        Self::default()
    }
    pub fn picker(mut self, picker: Picker) -> Self {
        self.picker = picker;
        self
    }
    pub fn include_not_ready(mut self, include: bool) -> Self {
        self.include_not_ready = include;
        self
    }
    pub fn down_policy(mut self, policy: DownInstancePolicy) -> Self {
        self.down_policy = policy;
        self
    }
    pub fn prefer_zone(mut self, zone: impl Into<String>) -> Self {
        self.prefer_zone = Some(zone.into());
        self
    }
    pub fn zone_key(mut self, key: impl Into<String>) -> Self {
        self.zone_key = key.into();
        self
    }
    pub fn weight_key(mut self, key: impl Into<String>) -> Self {
        self.weight_key = key.into();
        self
    }
    pub fn filter(mut self, f: impl Fn(&Instance) -> bool + Send + Sync + 'static) -> Self {
        self.filter = Some(Arc::new(f));
        self
    }

    pub(crate) fn check(&self) -> Result<()> {
        self.down_policy.check()?;
        if self.zone_key.is_empty() || self.weight_key.is_empty() {
            return Err(Error::invalid("zone_key and weight_key must not be empty"));
        }
        if self.prefer_zone.as_deref() == Some("") {
            return Err(Error::invalid("prefer_zone must not be empty"));
        }
        Ok(())
    }

    /// Ready (or readiness ignored) and passing the filter: what does not change with time.
    pub(crate) fn admits(&self, i: &Instance) -> bool {
        (self.include_not_ready || Readiness::of(&i.metadata) == Readiness::Ready)
            && self.filter.as_ref().is_none_or(|f| f(i))
    }

    fn zone<'a>(&self, i: &'a Instance) -> Option<&'a str> {
        i.metadata.get(&self.zone_key).and_then(|z| z.as_str())
    }

    fn weight(&self, i: &Instance) -> f64 {
        match i.metadata.get(&self.weight_key).and_then(|w| w.as_f64()) {
            Some(w) if w.is_finite() && w >= 0.0 => w,
            _ => 1.0,
        }
    }
}

/// Errors noted per instance id, as Curator's `DownInstanceManager` counts them.
#[derive(Default)]
pub(crate) struct DownTracker {
    /// id -> (first error, errors since)
    errors: Mutex<HashMap<String, (Instant, u32)>>,
}

impl DownTracker {
    fn purge(map: &mut HashMap<String, (Instant, u32)>, policy: &DownInstancePolicy, now: Instant) {
        map.retain(|_, (first, _)| now.saturating_duration_since(*first) < policy.period);
    }

    pub(crate) fn note_error_at(&self, id: &str, policy: &DownInstancePolicy, now: Instant) {
        let mut map = self.errors.lock().unwrap_or_else(|p| p.into_inner());
        Self::purge(&mut map, policy, now);
        map.entry(id.to_string()).or_insert((now, 0)).1 += 1;
    }

    pub(crate) fn is_down_at(&self, id: &str, policy: &DownInstancePolicy, now: Instant) -> bool {
        let mut map = self.errors.lock().unwrap_or_else(|p| p.into_inner());
        Self::purge(&mut map, policy, now);
        map.get(id).is_some_and(|(_, n)| *n >= policy.threshold)
    }

    /// The ids down at `now`.
    fn down_at(&self, policy: &DownInstancePolicy, now: Instant) -> Vec<String> {
        let mut map = self.errors.lock().unwrap_or_else(|p| p.into_inner());
        Self::purge(&mut map, policy, now);
        map.iter().filter(|(_, (_, n))| *n >= policy.threshold).map(|(id, _)| id.clone()).collect()
    }
}

/// A view's picking state: its options, the round-robin counter, the sticky choice and
/// the down-instance counts.
pub(crate) struct Chooser {
    pub(crate) options: ViewOptions,
    rr: AtomicUsize,
    sticky: Mutex<Option<String>>,
    pub(crate) down: DownTracker,
}

impl Chooser {
    pub(crate) fn new(options: ViewOptions) -> Chooser {
        Chooser { options, rr: AtomicUsize::new(0), sticky: Mutex::new(None), down: DownTracker::default() }
    }

    /// The available instances of `all` (id order kept), also passing `extra`.
    pub(crate) fn available(&self, all: &[Instance], extra: &dyn Fn(&Instance) -> bool, now: Instant) -> Vec<Instance> {
        let down = self.down.down_at(&self.options.down_policy, now);
        all.iter()
            .filter(|i| self.options.admits(i) && !down.contains(&i.id) && extra(i))
            .cloned()
            .collect()
    }

    /// The candidates of a pick: the available instances of the preferred zone, if any, else all available.
    fn candidates(&self, all: &[Instance], extra: &dyn Fn(&Instance) -> bool, now: Instant) -> Vec<Instance> {
        let avail = self.available(all, extra, now);
        if let Some(zone) = self.options.prefer_zone.as_deref() {
            let local: Vec<Instance> = avail.iter().filter(|i| self.options.zone(i) == Some(zone)).cloned().collect();
            if !local.is_empty() {
                return local;
            }
        }
        avail
    }

    fn round_robin(&self, c: &[Instance]) -> Option<Instance> {
        if c.is_empty() {
            return None;
        }
        let n = self.rr.fetch_add(1, Ordering::Relaxed);
        c.get(n % c.len()).cloned()
    }

    fn random(c: &[Instance]) -> Option<Instance> {
        if c.is_empty() {
            return None;
        }
        c.get(rand::random_range(0..c.len())).cloned()
    }

    fn weighted(&self, c: &[Instance]) -> Option<Instance> {
        let weights: Vec<f64> = c.iter().map(|i| self.options.weight(i)).collect();
        let total: f64 = weights.iter().sum();
        if total <= 0.0 || !total.is_finite() {
            return Self::random(c);
        }
        let mut r = rand::random::<f64>() * total;
        for (i, w) in c.iter().zip(&weights) {
            if r < *w {
                return Some(i.clone());
            }
            r -= w;
        }
        // Rounding: the last instance with a weight.
        c.iter().zip(&weights).rev().find(|(_, w)| **w > 0.0).map(|(i, _)| i.clone())
    }

    fn sticky(&self, c: &[Instance]) -> Option<Instance> {
        let mut cur = self.sticky.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = cur.as_ref().and_then(|id| c.iter().find(|i| i.id == *id)) {
            return Some(i.clone());
        }
        let next = self.round_robin(c);
        *cur = next.as_ref().map(|i| i.id.clone());
        next
    }

    /// Pick with `picker` among the candidates of `all` that also pass `extra`.
    pub(crate) fn pick(&self, picker: Picker, all: &[Instance], extra: &dyn Fn(&Instance) -> bool, now: Instant) -> Option<Instance> {
        let c = self.candidates(all, extra, now);
        match picker {
            Picker::RoundRobin => self.round_robin(&c),
            Picker::Random => Self::random(&c),
            Picker::Sticky => self.sticky(&c),
            Picker::Weighted => self.weighted(&c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn inst(id: &str, metadata: serde_json::Value) -> Instance {
        Instance { id: id.into(), addr: format!("{id}:1"), metadata }
    }
    fn any(_: &Instance) -> bool {
        true
    }

    #[test]
    fn readiness_lives_in_the_metadata_object() {
        assert_eq!(wire_metadata(&json!(null), Readiness::Ready).unwrap(), json!(null));
        assert_eq!(wire_metadata(&json!(null), Readiness::Draining).unwrap(), json!({"readiness": "draining"}));
        assert_eq!(wire_metadata(&json!({"a": 1, "readiness": "draining"}), Readiness::Ready).unwrap(), json!({"a": 1}));
        assert_eq!(wire_metadata(&json!({"readiness": "draining"}), Readiness::Ready).unwrap(), json!(null));
        assert_eq!(wire_metadata(&json!({}), Readiness::Ready).unwrap(), json!({}));
        assert_eq!(wire_metadata(&json!({"a": 1}), Readiness::NotReady).unwrap(), json!({"a": 1, "readiness": "not_ready"}));
        assert_eq!(wire_metadata(&json!("text"), Readiness::Ready).unwrap(), json!("text"));
        for (md, r) in [(json!("text"), Readiness::Draining), (json!({"weight": -1}), Readiness::Ready), (json!({"weight": "x"}), Readiness::Ready)] {
            assert_eq!(wire_metadata(&md, r).unwrap_err().kind(), crate::ErrorKind::InvalidArgument, "{md} {r}");
        }
        assert_eq!(Readiness::of(&json!(null)), Readiness::Ready);
        assert_eq!(Readiness::of(&json!({"readiness": "draining"})), Readiness::Draining);
        assert_eq!(Readiness::of(&json!({"readiness": "nonsense"})), Readiness::NotReady);
        assert_eq!(Readiness::parse("nope").unwrap_err().kind(), crate::ErrorKind::InvalidArgument);
        assert_eq!(Picker::parse("fastest").unwrap_err().kind(), crate::ErrorKind::InvalidArgument);
        assert_eq!(DownInstancePolicy::new(Duration::ZERO, 1).unwrap_err().kind(), crate::ErrorKind::InvalidArgument);
        assert_eq!(DownInstancePolicy::new(Duration::from_secs(1), 0).unwrap_err().kind(), crate::ErrorKind::InvalidArgument);
    }

    /// Curator's semantics on an injected clock: `threshold` errors within `period` of
    /// the first make the instance down until `period` after the first error.
    #[test]
    fn down_instance_policy_counts_from_the_first_error() {
        let policy = DownInstancePolicy::new(Duration::from_secs(10), 2).unwrap();
        let t = DownTracker::default();
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        t.note_error_at("a", &policy, at(0));
        assert!(!t.is_down_at("a", &policy, at(1)), "one error is below the threshold");
        t.note_error_at("a", &policy, at(5));
        assert!(t.is_down_at("a", &policy, at(5)));
        assert!(t.is_down_at("a", &policy, at(9)));
        assert!(!t.is_down_at("b", &policy, at(9)));
        assert!(!t.is_down_at("a", &policy, at(10)), "back {:?} after the first error", policy.period);
        // The count started again: one more error is not enough.
        t.note_error_at("a", &policy, at(11));
        assert!(!t.is_down_at("a", &policy, at(11)));
        // Errors further apart than the period never add up.
        t.note_error_at("c", &policy, at(20));
        t.note_error_at("c", &policy, at(31));
        assert!(!t.is_down_at("c", &policy, at(31)));
    }

    #[test]
    fn pickers_over_candidates() {
        let all = vec![
            inst("a", json!({"zone": "z1", "weight": 0})),
            inst("b", json!({"zone": "z2", "weight": 3})),
            inst("c", json!({"zone": "z2", "readiness": "draining"})),
        ];
        let now = Instant::now();
        let ch = Chooser::new(ViewOptions::new());
        let rr: Vec<String> = (0..4).map(|_| ch.pick(Picker::RoundRobin, &all, &any, now).unwrap().id).collect();
        assert_eq!(rr, ["a", "b", "a", "b"], "round robin in id order, draining c skipped");
        let ch = Chooser::new(ViewOptions::new().include_not_ready(true));
        assert_eq!(ch.available(&all, &any, now).len(), 3);
        let ch = Chooser::new(ViewOptions::new().prefer_zone("z2"));
        assert_eq!(ch.pick(Picker::Random, &all, &any, now).unwrap().id, "b");
        let ch = Chooser::new(ViewOptions::new().prefer_zone("z9"));
        assert!(ch.pick(Picker::Random, &all, &any, now).is_some(), "no instance in the zone: any zone");
        let ch = Chooser::new(ViewOptions::new());
        for _ in 0..100 {
            assert_eq!(ch.pick(Picker::Weighted, &all, &any, now).unwrap().id, "b", "weight 0 is never picked");
        }
        assert_eq!(ch.pick(Picker::Sticky, &all, &|i| i.id != "b", now).unwrap().id, "a");
        assert_eq!(ch.pick(Picker::Sticky, &all, &any, now).unwrap().id, "a", "sticky keeps its choice");
    }
}
