//! The order and the bounds of stopping a node's tasks, with stand-in tasks on a paused clock.

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};

use super::*;

/// Which stand-ins ended, and when.
type Ends = Arc<Mutex<Vec<(&'static str, Instant)>>>;

/// A stand-in for the task `name`: it ends `linger` after `stop` is cancelled (never, with
/// `None`), and notes when in `ends`.
fn stand_in(
    name: &'static str,
    stop: CancellationToken,
    linger: Option<Duration>,
    ends: &Ends,
) -> impl Future<Output = ()> + Send + 'static {
    let ends = ends.clone();
    async move {
        stop.cancelled().await;
        match linger {
            Some(linger) => tokio::time::sleep(linger).await,
            None => std::future::pending().await,
        }
        let mut ends = ends.lock().unwrap_or_else(PoisonError::into_inner);
        ends.push((name, Instant::now()));
    }
}

/// Stand-ins for every task, each on its stage's token, lingering as `lingers` says (in the
/// order of [`task`]'s names).
fn stand_ins(stages: &Stages, lingers: [Option<Duration>; 6], ends: &Ends) -> Tasks {
    let [server, ticker, formation, batcher, forwarder, requests] = lingers;
    let spawn = |name, stop, linger| tokio::spawn(stand_in(name, stop, linger, ends));
    let tracker = TaskTracker::new();
    tracker.spawn(stand_in(
        task::REQUESTS,
        stages.write_path(),
        requests,
        ends,
    ));
    Tasks {
        server: spawn(task::SERVER, stages.http(), server),
        ticker: spawn(task::TICKER, stages.background(), ticker),
        formation: spawn(task::FORMATION, stages.background(), formation),
        app: AppTasks {
            batcher: spawn(task::BATCHER, stages.write_path(), batcher),
            forwarder: spawn(task::FORWARDER, stages.write_path(), forwarder),
            requests: tracker,
        },
        raft: RaftTasks::new(),
    }
}

/// The stage a task belongs to.
fn stage_of(name: &str) -> u8 {
    match name {
        task::SERVER => 1,
        task::TICKER | task::FORMATION => 2,
        _ => 3,
    }
}

fn ended(ends: &Ends) -> Vec<(&'static str, Instant)> {
    ends.lock().unwrap_or_else(PoisonError::into_inner).clone()
}

/// A stage is cancelled only once every task of the stage before it has ended, and the
/// tasks have all ended when the stop returns. The slow task of each stage ends long after
/// the quick tasks of the next one would if that stage were cancelled early.
#[tokio::test(start_paused = true)]
async fn each_stage_is_joined_before_the_next_is_cancelled() {
    let stages = Stages::new();
    let ends = Ends::default();
    let slow = Some(Duration::from_millis(300));
    let quick = Some(Duration::from_millis(10));
    let mut tasks = stand_ins(&stages, [slow, slow, quick, slow, quick, quick], &ends);
    let watch = tasks.watch(StoreWatches::default());
    assert_eq!(watch.running().len(), 6, "every stand-in runs");

    stop_tasks(&stages, &mut tasks).await;

    assert_eq!(
        watch.running(),
        Vec::<&str>::new(),
        "a task still runs after the stop returned"
    );
    let ends = ended(&ends);
    let names: Vec<&str> = ends.iter().map(|(name, _)| *name).collect();
    assert_eq!(names.len(), 6, "every stand-in ended by itself: {names:?}");
    let stages_in_order: Vec<u8> = names.iter().map(|n| stage_of(n)).collect();
    assert!(
        stages_in_order.is_sorted(),
        "tasks ended stage by stage, in order: {names:?}"
    );
}

/// A task that does not end when its stage is cancelled is aborted once the stage's grace
/// is over, and the stop goes on: it still returns with every task ended, within the grace
/// and the wait for the abort.
#[tokio::test(start_paused = true)]
async fn a_task_that_ignores_its_stop_is_cut_at_the_grace() {
    let stages = Stages::new();
    let ends = Ends::default();
    let quick = Some(Duration::from_millis(10));
    let mut tasks = stand_ins(&stages, [quick, quick, quick, None, quick, quick], &ends);
    let watch = tasks.watch(StoreWatches::default());
    let started = Instant::now();

    stop_tasks(&stages, &mut tasks).await;

    let took = started.elapsed();
    assert_eq!(
        watch.running(),
        Vec::<&str>::new(),
        "the stubborn task was aborted, and waited for"
    );
    let names: Vec<&str> = ended(&ends).iter().map(|(name, _)| *name).collect();
    assert_eq!(
        names.len(),
        5,
        "the other stand-ins ended by themselves: {names:?}"
    );
    assert!(
        !names.contains(&task::BATCHER),
        "the batcher was cut: {names:?}"
    );
    assert!(
        took >= SHUTDOWN_GRACE && took < SHUTDOWN_GRACE + ABORT_WAIT + Duration::from_secs(1),
        "the stop waited out the grace of the stubborn task's stage, and no longer: {took:?}"
    );
}
