//! A tool of your own, driven by the runtime's loop: the model reads the
//! tool's name, description and argument schema, writes a call under a
//! grammar that only admits well-formed calls, the loop runs it and the
//! model answers from the result.
//!   cargo run --release --example custom_tool -- "How many oak chairs are in stock?"
use lottery::models::runtime::solve::{solve, SolveOptions};
use lottery::models::runtime::Tool;
use lottery::{Gpu, GpuOptions, Model, Session, SessionOptions};
use serde_json::{json, Value};
use std::sync::Arc;

/// A warehouse's stock, by item name.
struct Inventory {
    items: Vec<(&'static str, u32)>,
}

impl Inventory {
    fn find(&self, text: &str) -> Option<&(&'static str, u32)> {
        let t = text.to_lowercase();
        self.items.iter().find(|(name, _)| t.contains(name))
    }
}

impl Tool for Inventory {
    fn name(&self) -> &str {
        "inventory"
    }
    fn description(&self) -> &str {
        "Says how many of an item the warehouse has in stock."
    }
    fn parameters(&self) -> Value {
        // The items as an enum: under the grammar the model can only name
        // one we stock (free text, the 135M model wrote "pineapple" for
        // "pine tables").
        let names: Vec<&str> = self.items.iter().map(|(n, _)| *n).collect();
        json!({
            "type": "object",
            "properties": {"item": {"enum": names}},
            "required": ["item"],
            "additionalProperties": false
        })
    }
    fn call(&self, args: &Value) -> Result<String, String> {
        // Errors are text the model reads, never a panic.
        let item = args["item"]
            .as_str()
            .ok_or("inventory: `item` must be a string")?;
        match self.find(item) {
            Some((name, n)) => Ok(format!("{n} {name} in stock")),
            None => Err(format!("inventory: no item called `{item}`")),
        }
    }
    /// The task names an item we stock: the loop will not let the model
    /// answer before it has asked us (it would invent a number).
    fn relevant_to(&self, task: &str) -> bool {
        self.find(task).is_some()
    }
}

fn main() -> anyhow::Result<()> {
    let question = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "How many oak chairs are in stock?".into());
    let path = lottery::default_model_path()
        .ok_or_else(|| anyhow::anyhow!("run scripts/fetch-model.sh (or set LOTTERY_MODEL)"))?;
    let gpu = Arc::new(Gpu::new(&GpuOptions::default())?);
    let model = Arc::new(Model::load(gpu, &path, &mut |_, _| {})?);
    let mut session = Session::new(model, SessionOptions::default())?;
    let inventory = Inventory {
        items: vec![("oak chairs", 37), ("pine tables", 12), ("desk lamps", 240)],
    };
    let tools: Vec<&dyn Tool> = vec![&inventory];
    let sol = solve(
        &mut session,
        &tools,
        &question,
        None,
        &SolveOptions::default(),
    )?;
    for s in &sol.trace {
        eprintln!(
            "[{}] {} -> {}",
            s.kind,
            s.text,
            s.result.as_deref().or(s.error.as_deref()).unwrap_or("")
        );
    }
    println!("{}", sol.answer.as_deref().unwrap_or("(no answer)"));
    Ok(())
}
