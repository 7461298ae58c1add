//! Render jobs on real clusters: `caddyctl render` turns a document into a
//! PNG (identical requests share one job, bad requests get typed errors), a
//! worker killed mid-render loses its lease and another node completes the
//! job, and nodes without a graphics adapter start with workers off and
//! leave jobs queued until a capable node appears.

mod support;

use std::time::{Duration, Instant};

use caddy_client::render_api::{JobState, RenderSpec, RenderView};
use caddy_client::{Client, ErrorCode};
use serde_json::Value;
use support::{Dev, client_as, setup};

const PLAN: &str = r##"[
  {"op": "add_layer", "id": "walls", "name": "Walls", "color": "#aa0000", "line_weight": 0.7},
  {"op": "add_layer", "id": "notes", "name": "Notes", "color": "#0000cc"},
  {"op": "add", "kind": "polyline", "layer": "walls", "vertices": [[0,0],[8000,0],[8000,5000],[0,5000]], "closed": true},
  {"op": "add", "kind": "circle", "layer": "walls", "center": [4000, 2500], "radius": 900},
  {"op": "add", "kind": "text", "layer": "notes", "position": [300, 300], "height": 400, "content": "Ground floor"}
]"##;

/// Width, height and RGBA pixels of a PNG.
fn decode(png_bytes: &[u8]) -> (u32, u32, Vec<u8>) {
    let mut decoder = png::Decoder::new(std::io::Cursor::new(png_bytes));
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::ALPHA);
    let mut reader = decoder.read_info().expect("a PNG");
    let mut buf = vec![0; reader.output_buffer_size().expect("size")];
    let info = reader.next_frame(&mut buf).expect("a frame");
    buf.truncate(info.buffer_size());
    assert_eq!(info.color_type, png::ColorType::Rgba, "RGBA expected");
    (info.width, info.height, buf)
}

/// Pixels whose colour is close to `rgb`.
fn count_near(rgba: &[u8], rgb: [u8; 3]) -> usize {
    rgba.chunks(4).filter(|p| (0..3).all(|i| p[i].abs_diff(rgb[i]) < 60)).count()
}

/// The answering node's render line in `cluster status`, once its adapter
/// probe has finished.
fn render_status(dev: &Dev) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = json(&dev.ctl_ok(&["--json", "cluster", "status"]));
        let line = status["render"].as_str().unwrap_or_default().to_owned();
        if line != "off: starting" || Instant::now() > deadline {
            return line;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn json(out: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

#[test]
fn render_turns_a_document_into_a_png_through_the_cli() {
    let dev = Dev::start(3, &[]);
    dev.ctl_ok(&["tenant", "create", "acme", "--name", "Acme"]);
    let acme = |args: &[&str]| {
        let mut all = vec!["--tenant", "acme"];
        all.extend_from_slice(args);
        dev.ctl(&all)
    };
    let ok = |args: &[&str]| {
        let out = acme(args);
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let render = render_status(&dev);
    assert!(render.starts_with("on: "), "{render}");
    let status = dev.ctl_ok(&["cluster", "status"]);
    assert!(status.contains("render:") && status.contains("on: "), "{status}");

    let created = ok(&["doc", "create", "Ground floor"]);
    let doc = created.split_whitespace().nth(1).expect("doc id").to_owned();
    let tmp = tempfile::tempdir().expect("tmp");
    let ops = tmp.path().join("plan.json");
    std::fs::write(&ops, PLAN).expect("write");
    ok(&["doc", "apply", &doc, ops.to_str().expect("path")]);

    let image = tmp.path().join("plan.png");
    let shown = ok(&["--json", "render", &doc, "--size", "320x240", "-o", image.to_str().expect("path")]);
    let job = json(&shown);
    assert_eq!(job["state"], "done", "{job}");
    let (w, h, pixels) = decode(&std::fs::read(&image).expect("the image"));
    assert_eq!((w, h), (320, 240));
    let red = count_near(&pixels, [0xaa, 0, 0]);
    let blue = count_near(&pixels, [0, 0, 0xcc]);
    assert!(red > 500, "the walls layer is drawn in its colour ({red} red pixels)");
    assert!(blue > 20, "the notes layer is drawn ({blue} blue pixels)");
    assert!(job["image"]["triangles"].as_u64().is_some_and(|t| t > 0), "{job}");

    // The same request again: the same job, no new render.
    let again = json(&ok(&["--json", "render", &doc, "--size", "320x240"]));
    assert_eq!((again["id"].clone(), again["deduplicated"].clone()), (job["id"].clone(), Value::Bool(true)));
    // Only the walls layer: no blue text.
    let walls = tmp.path().join("walls.png");
    ok(&["render", &doc, "--size", "320x240", "--layers", "walls", "-o", walls.to_str().expect("path")]);
    let (_, _, only_walls) = decode(&std::fs::read(&walls).expect("image"));
    assert_eq!(count_near(&only_walls, [0, 0, 0xcc]), 0, "a layer left out was drawn");
    assert!(count_near(&only_walls, [0xaa, 0, 0]) > 500);

    // A past change, a window and a rotation.
    let windowed = json(&ok(&[
        "--json",
        "render",
        &doc,
        "--version",
        "1",
        "--window",
        "0,0,4000,2500",
        "--rotate",
        "90",
        "--size",
        "200x200",
        "--wait",
    ]));
    assert_eq!((windowed["state"].as_str(), windowed["version"].as_u64()), (Some("done"), Some(1)), "{windowed}");

    let jobs = ok(&["render", "jobs"]);
    assert!(jobs.contains(job["id"].as_str().expect("id")) && jobs.contains("done"), "{jobs}");
    let shown = ok(&["render", "show", job["id"].as_str().expect("id")]);
    assert!(shown.contains("320x240") && shown.contains("PNG"), "{shown}");

    // A broken reference (an insert of a deleted block): the rest is
    // rendered and the problem reported with the job.
    let broken = tmp.path().join("broken.json");
    std::fs::write(
        &broken,
        r#"[{"op": "add_block", "id": "door", "name": "door"},
            {"op": "add", "kind": "circle", "owner": "door", "center": [0, 0], "radius": 300},
            {"op": "add", "kind": "insert", "id": "front-door", "block": "door", "position": [4000, 0]},
            {"op": "delete_node", "id": "door"}]"#,
    )
    .expect("write");
    ok(&["doc", "apply", &doc, broken.to_str().expect("path")]);
    let drawn = tmp.path().join("broken.png");
    let with_problems =
        json(&ok(&["--json", "render", &doc, "--size", "320x240", "-o", drawn.to_str().expect("path")]));
    assert_eq!(with_problems["state"], "done", "{with_problems}");
    assert!(with_problems["image"]["problem_count"].as_u64().is_some_and(|n| n > 0), "{with_problems}");
    let problems = with_problems["image"]["problems"].to_string();
    assert!(problems.contains("front-door"), "{problems}");
    let (_, _, still) = decode(&std::fs::read(&drawn).expect("image"));
    assert!(count_near(&still, [0xaa, 0, 0]) > 500, "the walls are still drawn");

    // Automatic thumbnails: once on, the next committed change gets one.
    let on = ok(&["render", "thumbnails", "on", "--size", "160x120"]);
    assert!(on.contains("on, 160x120"), "{on}");
    let more = tmp.path().join("more.json");
    std::fs::write(
        &more,
        r#"[{"op": "add", "kind": "circle", "layer": "walls", "center": [2000, 2500], "radius": 600}]"#,
    )
    .expect("write");
    let applied = json(&ok(&["--json", "doc", "apply", &doc, more.to_str().expect("path")]));
    let latest = applied["change"].as_u64().expect("a committed change");
    let thumb_png = tmp.path().join("thumb.png");
    let deadline = Instant::now() + Duration::from_secs(60);
    let thumb = loop {
        let out = acme(&["--json", "render", "thumbnail", &doc, "-o", thumb_png.to_str().expect("path")]);
        if out.status.success() {
            break json(&String::from_utf8_lossy(&out.stdout));
        }
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("no thumbnail yet") && Instant::now() < deadline, "{err}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!((thumb["thumbnail"].as_bool(), thumb["version"].as_u64()), (Some(true), Some(latest)), "{thumb}");
    let (w, h, thumb_pixels) = decode(&std::fs::read(&thumb_png).expect("the thumbnail"));
    assert_eq!((w, h), (160, 120));
    assert!(count_near(&thumb_pixels, [0xaa, 0, 0]) > 50, "the thumbnail shows the walls");
    assert!(ok(&["render", "thumbnails", "off"]).contains("thumbnails: off"));

    // Bad requests: typed errors, one line each.
    for (args, want) in [
        (vec!["render", doc.as_str(), "--size", "0x10"], "zero side"),
        (vec!["render", doc.as_str(), "--size", "100000x100000"], "exceeds"),
        (vec!["render", "doc-999", "--size", "10x10"], "not_found"),
        (vec!["render", doc.as_str(), "--version", "99", "--size", "10x10"], "has no change 99"),
        (vec!["render", "cancel", job["id"].as_str().expect("id")], "already done"),
        (vec!["render", "thumbnails", "on", "--size", "0x10"], "zero side"),
        (vec!["render", "thumbnail", "doc-999"], "no thumbnail"),
    ] {
        let out = acme(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(want), "{args:?}: {err}");
    }
}

async fn running_on(client: &Client, job: &str) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let view = client.render_job(job).await.expect("job");
        if view.state == JobState::Running {
            return view.node.expect("a running job names its node");
        }
        assert!(Instant::now() < deadline, "the job never started: {view:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn spec(doc: u64, width: u32) -> RenderSpec {
    RenderSpec {
        doc: caddy_client::doc_api::DocId(doc),
        version: None,
        view: RenderView::default(),
        width,
        height: 200,
        background: [255, 255, 255, 255],
        layers: None,
    }
}

async fn new_doc(client: &Client) -> u64 {
    let info = client.doc_create("site", None).await.expect("doc");
    caddy_client::doc_api::DocId::parse(&info.id).expect("id").0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_worker_is_killed_is_completed_by_another_node() {
    let env = [("CADDY_RENDER_MIN_RENDER_MS", "6000"), ("CADDY_RENDER_LEASE_MS", "3000")];
    let dev = Dev::start(3, &env);
    let tokens = setup(&dev, &[("ann@acme.test", "editor")]).await;
    let client = client_as(&dev, None, &tokens[0], "acme").await;
    let doc = new_doc(&client).await;
    let job = client.render_submit(spec(doc, 300)).await.expect("submit");
    let first = running_on(&client, &job.id).await;
    dev.kill9(first);
    let others: Vec<u64> = (1..=3).filter(|n| *n != first).collect();
    let survivor = client_as(&dev, Some(others[0]), &tokens[0], "acme").await;
    let done = survivor.render_wait(&job.id, Duration::from_secs(60)).await.expect("wait");
    assert_eq!(done.state, JobState::Done, "{done:?}");
    assert!(done.attempts >= 2, "{done:?}");
    assert_ne!(done.node, Some(first), "{done:?}");
    let mut png_bytes = Vec::new();
    survivor.render_image(&job.id, &mut png_bytes).await.expect("image");
    assert_eq!(decode(&png_bytes).0, 300);

    // Cancelling a running job stops it for good.
    let job = survivor.render_submit(spec(doc, 301)).await.expect("submit");
    running_on(&survivor, &job.id).await;
    let cancelled = survivor.render_cancel(&job.id).await.expect("cancel");
    assert_eq!(cancelled.state, JobState::Cancelled);
    tokio::time::sleep(Duration::from_secs(8)).await;
    let later = survivor.render_job(&job.id).await.expect("job");
    assert_eq!((later.state, later.image.is_none()), (JobState::Cancelled, true), "{later:?}");
    let err = survivor.render_image(&job.id, &mut Vec::new()).await.expect_err("no image");
    assert_eq!(err.code(), ErrorCode::FailedPrecondition);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_adapter_nodes_start_with_workers_off_and_jobs_wait_for_a_capable_node() {
    // An ICD list naming no file: the Vulkan loader finds no driver at all.
    let no_gpu = [("VK_ICD_FILENAMES", "/nonexistent/icd.json"), ("VK_DRIVER_FILES", "/nonexistent/icd.json")];
    let mut dev = Dev::start(3, &no_gpu);
    let render = render_status(&dev);
    assert!(render.starts_with("off: no graphics adapter"), "{render}");
    let said = || {
        let log = std::fs::read_to_string(dev.dir.join("node1/caddyd.log")).unwrap_or_default();
        log.matches("render workers off").count()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while said() == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(said(), 1, "said once in node 1's log");

    let tokens = setup(&dev, &[("ann@acme.test", "editor")]).await;
    let client = client_as(&dev, None, &tokens[0], "acme").await;
    let doc = new_doc(&client).await;
    let job = client.render_submit(spec(doc, 200)).await.expect("submit");
    // A wait longer than one attempt's budget (held on the server in slices
    // shorter than it) ends with the job as it is, not with a timeout.
    let started = Instant::now();
    let waited = client.render_wait(&job.id, Duration::from_secs(8)).await.expect("wait");
    assert_eq!((waited.state, waited.attempts), (JobState::Queued, 0), "{waited:?}");
    assert!(started.elapsed() >= Duration::from_secs(8), "returned after {:?}", started.elapsed());

    // Node 3 comes back with a (software) adapter and takes the job.
    dev.kill9(3);
    dev.restart_with(3, &[]);
    // Any node may answer the wait: the job's state is the cluster's.
    let done = client.render_wait(&job.id, Duration::from_secs(90)).await.expect("wait");
    assert_eq!((done.state, done.node), (JobState::Done, Some(3)), "{done:?}\n--- node 3 ---\n{}", dev.node_log(3));

    // `cluster status`, whichever node answers, shows every member's render
    // workers as that member reports them.
    let status = json(&dev.ctl_ok(&["--json", "cluster", "status"]));
    let member_render = |id: u64| {
        status["members"]
            .as_array()
            .and_then(|members| members.iter().find(|m| m["id"] == id))
            .and_then(|m| m["render"].as_str())
            .unwrap_or_default()
            .to_owned()
    };
    assert!(member_render(3).starts_with("on: "), "{status}");
    for id in [1, 2] {
        assert!(member_render(id).starts_with("off: no graphics adapter"), "{status}");
    }
    let text = dev.ctl_ok(&["cluster", "status"]);
    assert!(text.contains("RENDER") && text.contains("off: no graphics adapter"), "{text}");
}
