//! `mobilenet paper`: our exact counts beside the paper's printed figures.

use crate::cli::format::{table, thousands};
use mobilenet::Result;
use mobilenet::cost::paper::{PaperTable, TABLES, reproduce};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Which table (2, 4, 5, 6 or 7); all of them when left out.
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(["2", "4", "5", "6", "7"]))]
    table: Option<String>,
    /// Print JSON (an array of tables) instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(args: &Args) -> Result<()> {
    let numbers: Vec<u8> = match &args.table {
        Some(t) => vec![
            t.parse()
                .map_err(|_| mobilenet::Error::InvalidConfig(format!("no table '{t}'")))?,
        ],
        None => TABLES.to_vec(),
    };
    let tables = numbers
        .into_iter()
        .map(reproduce)
        .collect::<Result<Vec<_>>>()?;
    if args.json {
        let value = serde_json::to_value(&tables).map_err(|e| {
            mobilenet::Error::InvalidConfig(format!("cannot serialise the tables: {e}"))
        })?;
        println!("{value}");
        return Ok(());
    }
    for t in &tables {
        print!("{}", render(t));
    }
    Ok(())
}

fn mark(matches: bool) -> String {
    if matches { "yes" } else { "no, see note" }.to_string()
}

fn render(t: &PaperTable) -> String {
    let mut notes = Vec::new();
    let (number, title, body) = match t {
        PaperTable::Shares {
            table: n,
            title,
            rows,
        } => {
            let mut cells = vec![
                [
                    "Type",
                    "Paper Mult-Adds",
                    "Ours",
                    "Paper Params",
                    "Ours (no FC bias)",
                    "Ours (with FC bias)",
                    "Match",
                ]
                .map(String::from)
                .to_vec(),
            ];
            for r in rows {
                cells.push(vec![
                    r.row.to_string(),
                    format!("{:.2} %", r.paper_mult_adds_percent),
                    format!("{:.2} %", r.mult_adds_percent),
                    format!("{:.2} %", r.paper_params_percent),
                    format!("{:.2} %", r.params_percent_no_fc_bias),
                    format!("{:.2} %", r.params_percent),
                    mark(r.matches),
                ]);
                if let Some(note) = &r.note {
                    notes.push(format!("{}: {note}", r.row));
                }
            }
            (n, title, table(&cells, &[1, 2, 3, 4, 5]))
        }
        PaperTable::Models {
            table: n,
            title,
            rows,
        } => {
            let mut cells = vec![
                [
                    "Model",
                    "ImageNet Acc.",
                    "Paper Mult-Adds",
                    "Ours",
                    "Paper Params",
                    "Ours",
                    "Match",
                ]
                .map(String::from)
                .to_vec(),
            ];
            for r in rows {
                cells.push(vec![
                    r.model.to_string(),
                    format!("{:.1} %", r.paper_accuracy),
                    format!("{} M", r.paper_mult_adds_millions),
                    thousands(r.mult_adds),
                    format!("{:.1} M", r.paper_params_millions),
                    thousands(r.params),
                    mark(r.matches),
                ]);
                if let Some(note) = &r.note {
                    notes.push(format!("{}: {note}", r.model));
                }
            }
            (n, title, table(&cells, &[1, 2, 3, 4, 5]))
        }
    };
    let mut out = format!("Table {number}. {title}\n\n{body}");
    for note in notes {
        out.push_str(&format!("note: {note}\n"));
    }
    out.push('\n');
    out
}
