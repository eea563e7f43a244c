//! The one pagination rule on the dashboard: every list page takes `limit` and
//! `after` like the API's lists, refuses a limit outside 1–500 or a cursor that is
//! not one with a 422 page, and links the next page (same `limit`) until the last.
//! Following the links shows every row exactly once.

use clawy_core::audit::Scope;
use reqwest::StatusCode;

use crate::api_instances::{ROOMY, fake_host, instance_of, ssh_key};
use crate::common::TestApp;
use crate::web_support::WebClient;

/// The "Next page" link of a list page, if it has one (as the browser reads the
/// attribute: the templates escape `/` and `&`).
fn next_link(html: &str) -> Option<String> {
    let end = html.find("\">Next page →")?;
    let start = html[..end].rfind("href=\"")? + "href=\"".len();
    Some(
        html[start..end]
            .replace("&#x2f;", "/")
            .replace("&amp;", "&"),
    )
}

/// Every page of a list, following its "Next page" links from `first`.
async fn walk(web: &mut WebClient<'_>, first: &str) -> Vec<String> {
    let mut pages = Vec::new();
    let mut next = Some(first.to_owned());
    while let Some(path) = next {
        let (status, html) = web.get_text(&path).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        next = next_link(&html);
        assert_eq!(
            html.contains(">← First page<"),
            !pages.is_empty(),
            "a way back from every page but the first: {path}"
        );
        pages.push(html);
        assert!(pages.len() <= 100, "{first} never ends");
    }
    pages
}

/// How many of `pages` contain `needle` (each row must be on exactly one).
fn pages_with(pages: &[String], needle: &str) -> usize {
    pages.iter().filter(|p| p.contains(needle)).count()
}

#[tokio::test]
async fn dashboard_lists_page_by_the_one_rule_with_next_links() {
    let app = TestApp::start().await;
    fake_host(&app, "fra1-a", "DE", ROOMY, 3).await;
    let operator = app.with_operator().await;
    let mut users = Vec::new();
    for _ in 0..4 {
        users.push(app.with_user().await);
    }
    let owner = &users[0];
    for name in ["alpha", "bravo", "charlie"] {
        instance_of(&app, owner, name).await;
    }
    ssh_key(&app, owner).await;
    ssh_key(&app, owner).await;

    // Operator users: 5 accounts, 2 a page → 3 pages, each account's row once (the
    // operator's own address is also in every page's header, so match the cell).
    let mut op = WebClient::new(&app);
    op.login(&operator).await;
    let pages = walk(&mut op, "/operator/users?limit=2").await;
    assert_eq!(pages.len(), 3);
    for u in users.iter().chain([&operator]) {
        let cell = format!("data-label=\"Email\">{}<", u.email);
        assert_eq!(pages_with(&pages, &cell), 1, "{}", u.email);
    }

    // The owner's instances, sessions, activity and SSH keys.
    let mut web = WebClient::new(&app);
    web.login(owner).await;
    for _ in 0..2 {
        WebClient::new(&app).login(owner).await;
    }
    let pages = walk(&mut web, "/instances?limit=2").await;
    assert_eq!(pages.len(), 2);
    for name in ["alpha", "bravo", "charlie"] {
        assert_eq!(pages_with(&pages, &format!(">{name}</a>")), 1, "{name}");
    }
    let pages = walk(&mut web, "/account?limit=1").await;
    assert_eq!(pages.len(), 3, "three sessions, one a page");
    assert_eq!(pages_with(&pages, ">this session<"), 1);
    let events = app
        .core
        .audit()
        .count(Scope::User(owner.id()))
        .await
        .unwrap();
    assert!(events >= 3, "{events}");
    let pages = walk(&mut web, "/activity?limit=1").await;
    assert_eq!(pages.len() as i64, events);
    let pages = walk(&mut web, "/ssh-keys?limit=1").await;
    assert_eq!(pages.len(), 2);
}

#[tokio::test]
async fn dashboard_lists_refuse_what_the_api_refuses() {
    let app = TestApp::start().await;
    let operator = app.with_operator().await;
    let mut op = WebClient::new(&app);
    op.login(&operator).await;
    // A limit out of range or a cursor that is not one: a 422 naming the parameter.
    for (path, names) in [
        ("/activity?limit=0", "limit"),
        ("/operator/users?limit=501", "limit"),
        ("/operator/reports?after=not-a-cursor", "after"),
        ("/instances?after=12", "after"),
        ("/account?after=x:", "after"),
    ] {
        let (status, html) = op.get_text(path).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{path}");
        assert!(html.contains(&format!("`{names}`")), "{path}: {html}");
    }
    // A limit that is not a number is refused before any list is read.
    let status = op.get("/account?limit=-1").await.status();
    assert!(
        matches!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY | StatusCode::BAD_REQUEST
        ),
        "{status}"
    );
    // The first page of a short list has neither link.
    let (_, html) = op.get_text("/operator/users").await;
    assert!(next_link(&html).is_none() && !html.contains("First page"));
}
