//! The terminal guard and the event loop.
//!
//! Three sources feed one channel of `Action`s: a thread reading crossterm events, a
//! tick timer, and the tokio tasks that perform `Command`s. The loop draws, waits for
//! the next action, updates, and spawns the commands; it never awaits I/O itself, so
//! input stays responsive however slow the cluster is.

use std::future::Future;
use std::io::{self, Stdout};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossterm::event::{self, Event, KeyEventKind};
use crossterm::execute;
use crossterm::terminal::{
    disable_raw_mode, enable_raw_mode, EnterAlternateScreen, LeaveAlternateScreen,
};
use ratatui::backend::{Backend, CrosstermBackend};
use ratatui::Terminal;
use tokio::sync::mpsc;

use crate::app::{self, Action, App, AppConfig, Command};
use crate::ui;

/// Performs one command and returns the action carrying its result. A plain function
/// value (no trait): the integrator passes a closure over the Kafka client.
pub type Perform =
    Arc<dyn Fn(Command) -> Pin<Box<dyn Future<Output = Action> + Send>> + Send + Sync>;

const TICK: Duration = Duration::from_millis(250);

/// Restores the terminal when dropped, and on panic before the panic message prints.
pub struct TerminalGuard {
    pub terminal: Terminal<CrosstermBackend<Stdout>>,
}

impl TerminalGuard {
    pub fn enter() -> io::Result<TerminalGuard> {
        install_panic_hook();
        enable_raw_mode()?;
        let mut stdout = io::stdout();
        if let Err(e) = execute!(stdout, EnterAlternateScreen) {
            restore();
            return Err(e);
        }
        let terminal = match Terminal::new(CrosstermBackend::new(stdout)) {
            Ok(t) => t,
            Err(e) => {
                restore();
                return Err(e);
            }
        };
        Ok(TerminalGuard { terminal })
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        restore();
        let _ = self.terminal.show_cursor();
    }
}

/// Best effort: each step is tried even if an earlier one fails.
fn restore() {
    let _ = disable_raw_mode();
    let _ = execute!(io::stdout(), LeaveAlternateScreen, crossterm::cursor::Show);
}

fn install_panic_hook() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        restore();
        previous(info);
    }));
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Runs the console until the user quits.
pub async fn run(config: AppConfig, perform: Perform) -> io::Result<()> {
    let mut guard = TerminalGuard::enter()?;
    let (tx, rx) = mpsc::unbounded_channel::<Action>();
    let input = spawn_input_thread(tx.clone());
    let result = event_loop(&mut guard.terminal, config, perform, tx, rx, |_, _| {}).await;
    drop(guard);
    let _ = input.join();
    result
}

/// The draw loop on any backend: draws, waits for the next action (from `rx`,
/// fed by the input thread and by finished commands, or the tick), updates,
/// and spawns the commands. `frame` sees the app after every draw and how
/// long the draw took (the benchmark's probe; `run` passes a no-op). Returns
/// when the user quits; dropping `rx` then tells the input source to stop.
pub async fn event_loop<B: Backend>(
    terminal: &mut Terminal<B>,
    config: AppConfig,
    perform: Perform,
    tx: mpsc::UnboundedSender<Action>,
    mut rx: mpsc::UnboundedReceiver<Action>,
    mut frame: impl FnMut(&App, Duration),
) -> io::Result<()> {
    let mut app = App::new(config, now_ms());
    let first = app.start();
    spawn_all(first, &tx, &perform);
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        let started = Instant::now();
        terminal
            .draw(|f| ui::draw(f, &app))
            .map_err(|e| io::Error::other(e.to_string()))?;
        frame(&app, started.elapsed());
        let action = tokio::select! {
            Some(a) = rx.recv() => a,
            _ = tick.tick() => Action::Tick { now_ms: now_ms() },
        };
        let commands = app::update(&mut app, action);
        spawn_all(commands, &tx, &perform);
        if app.quit {
            return Ok(());
        }
    }
}

fn spawn_all(commands: Vec<Command>, tx: &mpsc::UnboundedSender<Action>, perform: &Perform) {
    for cmd in commands {
        let fut = perform(cmd);
        let tx = tx.clone();
        tokio::spawn(async move {
            // The receiver is gone only when the console is quitting.
            let _ = tx.send(fut.await);
        });
    }
}

/// crossterm's `read` blocks, so it lives on its own thread; `poll` with a timeout lets
/// the thread notice the console has quit.
fn spawn_input_thread(tx: mpsc::UnboundedSender<Action>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || loop {
        if tx.is_closed() {
            return;
        }
        match event::poll(Duration::from_millis(100)) {
            Ok(false) => continue,
            Ok(true) => {}
            Err(_) => return,
        }
        let action = match event::read() {
            Ok(Event::Key(k)) if k.kind != KeyEventKind::Release => Action::Key(k),
            // A resize redraws on the next loop turn.
            Ok(Event::Resize(..)) => Action::Tick { now_ms: now_ms() },
            Ok(_) => continue,
            Err(_) => return,
        };
        if tx.send(action).is_err() {
            return;
        }
    })
}
