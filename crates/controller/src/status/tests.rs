use super::*;

fn at(s: i64) -> Timestamp {
    Timestamp::from_second(s).unwrap_or(Timestamp::UNIX_EPOCH)
}

fn facts() -> Facts {
    Facts {
        generation: Some(2),
        url: Some("https://exp-1.d8-storage-volume-data-manager.svc/".into()),
        ca: Some("Q0E=".into()),
        public_url: Some("https://h/ns/n/".into()),
        volume_mode: Some(VolumeMode::Filesystem),
        access: Some(at(100)),
        expiration: Some(at(220)),
        effective_ttl: Some(Duration::from_secs(120)),
    }
}

#[test]
fn ttl_defaults_caps_and_rejects() {
    let d = Duration::from_secs(120);
    let max = Duration::from_secs(3600);
    assert_eq!(effective_ttl(None, d, max), Ok(d));
    assert_eq!(effective_ttl(Some(""), d, max), Ok(d));
    assert_eq!(
        effective_ttl(Some("5m"), d, max),
        Ok(Duration::from_secs(300))
    );
    assert_eq!(effective_ttl(Some("48h"), d, max), Ok(max));
    assert!(effective_ttl(Some("1d"), d, max).is_err());
}

#[test]
fn expiry_math() {
    assert_eq!(expires_at(at(100), Duration::from_secs(120)), at(220));
    assert_eq!(until(at(100), at(220)), Duration::from_secs(120));
    assert_eq!(until(at(300), at(220)), Duration::ZERO);
    assert_eq!(add(at(0), Duration::MAX), Timestamp::MAX);
}

#[test]
fn ready_sets_url_and_mode_and_no_expired_condition() {
    let s = compute(
        None,
        &Outcome::Ready {
            message: "serving".into(),
        },
        &facts(),
        at(150),
    );
    assert_eq!(s.phase, Some(Phase::Ready));
    assert!(s.url.is_some() && s.ca.is_some() && s.volume_mode.is_some());
    assert_eq!(s.observed_generation, Some(2));
    assert_eq!(s.effective_ttl.as_deref(), Some("2m"));
    let r = conditions::find(&s.conditions, conditions::READY).expect("ready");
    assert_eq!(r.status, "True");
    assert_eq!(r.reason, reason::SERVER_READY);
    assert!(conditions::find(&s.conditions, conditions::EXPIRED).is_none());
}

#[test]
fn expiry_sets_both_conditions_and_clears_urls() {
    let ready = compute(
        None,
        &Outcome::Ready {
            message: "serving".into(),
        },
        &facts(),
        at(150),
    );
    let s = compute(Some(&ready), &Outcome::Expired, &facts(), at(230));
    assert_eq!(s.phase, Some(Phase::Expired));
    let r = conditions::find(&s.conditions, conditions::READY).expect("ready");
    assert_eq!((r.status.as_str(), r.reason.as_str()), ("False", "Expired"));
    assert_eq!(r.last_transition_time, Time(at(230)));
    let e = conditions::find(&s.conditions, conditions::EXPIRED).expect("expired");
    assert_eq!(e.status, "True");
    assert!(s.url.is_none() && s.public_url.is_none());
    assert_eq!(s.ca, facts().ca);
    // Expired at 230, retention 60 s.
    assert_eq!(delete_at(Some(&s), Duration::from_secs(60)), Some(at(290)));
    assert_eq!(delete_at(Some(&ready), Duration::from_secs(60)), None);
    // A later pass keeps the transition time.
    let again = compute(Some(&s), &Outcome::Expired, &facts(), at(500));
    assert_eq!(
        conditions::find(&again.conditions, conditions::EXPIRED)
            .expect("expired")
            .last_transition_time,
        Time(at(230))
    );
}

#[test]
fn expiring_shows_no_expiry_signal_until_expired() {
    // Clients delete and recreate an export on either expiry signal at once, so neither may show
    // while the volume is still being returned (the finalizer still on).
    let ready = compute(
        None,
        &Outcome::Ready {
            message: "serving".into(),
        },
        &facts(),
        at(150),
    );
    let s = compute(Some(&ready), &Outcome::Expiring, &facts(), at(230));
    assert_eq!(s.phase, Some(Phase::Expiring));
    let r = conditions::find(&s.conditions, conditions::READY).expect("ready");
    assert_eq!(
        (r.status.as_str(), r.reason.as_str()),
        ("False", "Returning")
    );
    assert!(conditions::find(&s.conditions, conditions::EXPIRED).is_none());
    assert!(
        s.url.is_none() && s.public_url.is_none(),
        "nothing serves any more"
    );
    assert_eq!(delete_at(Some(&s), Duration::from_secs(60)), None);
    let e = compute(Some(&s), &Outcome::Expired, &facts(), at(240));
    let r = conditions::find(&e.conditions, conditions::READY).expect("ready");
    assert_eq!((r.status.as_str(), r.reason.as_str()), ("False", "Expired"));
    assert_eq!(
        r.last_transition_time,
        Time(at(230)),
        "Ready did not flip again"
    );
    let x = conditions::find(&e.conditions, conditions::EXPIRED).expect("expired");
    assert_eq!(x.last_transition_time, Time(at(240)));
    // Retention counts from the expiry signal.
    assert_eq!(delete_at(Some(&e), Duration::from_secs(60)), Some(at(300)));
}

#[test]
fn events_only_on_transitions() {
    let pending = compute(
        None,
        &Outcome::Pending {
            reason: reason::TARGET_IN_USE,
            message: "PVC data is used by pod web-0".into(),
        },
        &Facts::default(),
        at(1),
    );
    let ev = transition(None, &pending).expect("first status is a transition");
    assert!(ev.0, "TargetInUse is a warning");
    assert_eq!(ev.1, "TargetInUse");
    assert_eq!(transition(Some(&pending), &pending), None);
    let ready = compute(
        Some(&pending),
        &Outcome::Ready {
            message: "serving".into(),
        },
        &facts(),
        at(2),
    );
    let ev = transition(Some(&pending), &ready).expect("ready");
    assert!(!ev.0);
    assert_eq!(ev.1, "ServerReady");
    let ready2 = compute(
        Some(&ready),
        &Outcome::Ready {
            message: "serving".into(),
        },
        &facts(),
        at(3),
    );
    assert_eq!(transition(Some(&ready), &ready2), None);
}

#[test]
fn a_blocked_deletion_stays_terminating_and_warns_once() {
    let f = facts();
    let term = compute(None, &Outcome::Terminating, &f, at(10));
    let blocked = Outcome::TerminatingBlocked {
        reason: reason::EXPORTER_FAILED,
        message: "the DataExport is being deleted; waiting for exporter pod p on unreachable node n to terminate".into(),
    };
    let next = compute(Some(&term), &blocked, &f, at(20));
    assert_eq!(next.phase, Some(Phase::Terminating));
    let ready = conditions::find(&next.conditions, conditions::READY).expect("Ready");
    assert_eq!(ready.reason, reason::EXPORTER_FAILED);
    assert!(ready.message.contains("unreachable node n"));
    let (warning, r, _) = transition(Some(&term), &next).expect("an Event");
    assert!(warning);
    assert_eq!(r, reason::EXPORTER_FAILED);
    let again = compute(Some(&next), &blocked, &f, at(30));
    assert_eq!(transition(Some(&next), &again), None);
}
