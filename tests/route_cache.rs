//! The route cache is process-wide (issue 8.1): SO_REUSEPORT spreads one user's connections over
//! every worker, and each of them must find the route the first lookup stored; concurrent logins
//! of one account on different workers share one lookup request. Real Dovecot behind it.

mod common;

use common::*;

#[test]
fn twenty_logins_of_one_user_on_four_workers_make_one_lookup() {
    let env = Env::start_opts("", &["--workers", "4"]);
    for _ in 0..20 {
        let mut c = Raw::greeted(env.port());
        c.login("bob@example.com", "bobpw");
        c.send(b"z LOGOUT\r\n");
        c.until("z OK");
    }
    assert_eq!(env.lookup.requests(), 1, "one lookup for twenty logins");
}

#[test]
fn concurrent_logins_on_every_worker_share_one_lookup() {
    // the handler answers slowly, so all twenty logins are waiting at the same time
    let env = Env::start_opts("", &["--workers", "4"]);
    env.lookup.set(
        "bob@example.com",
        Rule::Slow(
            std::time::Duration::from_millis(1500),
            Box::new(Rule::Route {
                server: env.dovecot.addr(),
                account: Some("bob@example.com".into()),
                alias: false,
            }),
        ),
    );
    let port = env.port();
    let logins: Vec<_> = (0..20)
        .map(|_| {
            std::thread::spawn(move || {
                let mut c = Raw::greeted(port);
                c.login("bob@example.com", "bobpw");
            })
        })
        .collect();
    for l in logins {
        l.join().expect("every login succeeds");
    }
    assert_eq!(env.lookup.requests(), 1, "one lookup for twenty concurrent logins");
}
