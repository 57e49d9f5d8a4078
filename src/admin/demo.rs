//! `loanfolio admin demo-seed`: a few agents' worth of realistic leads and loans, so a
//! newcomer's `scripts/dev` shows data. The agents are the test OpenID Provider's users, so
//! signing in as them shows their own files. Synthetic data only: generated SSNs, phone
//! numbers in the 555 fiction range, emails at example.com.

use crate::auth::{Actor, ReadScope, Role};
use crate::domain::money::{Money, MoneyInput};
use crate::leads::{Address, LeadInput, LeadStatus, LoanPurpose};
use crate::loans::{LoanStatus, LoanType};
use crate::state::AppState;
use crate::{leads, loans};

fn agent(subject: &str, name: &str, team: &str, role: Role) -> Actor {
    Actor {
        subject: subject.into(),
        display_name: name.into(),
        email: Some(format!("{subject}@lender.test")),
        roles: vec![role],
        team: Some(team.into()),
        auth_time: None,
        issued_at: None,
    }
}

const FIRST: [&str; 10] = [
    "Morgan", "Riley", "Jordan", "Taylor", "Quinn", "Rowan", "Sage", "Elliot", "Harper", "Reese",
];
const LAST: [&str; 10] = [
    "Alvarez", "Brooks", "Chen", "Diaz", "Evans", "Foster", "Garcia", "Hughes", "Iverson", "Jensen",
];
const CITIES: [(&str, &str, &str); 4] = [
    ("Springfield", "IL", "62701"),
    ("Columbus", "OH", "43004"),
    ("Austin", "TX", "73301"),
    ("Madison", "WI", "53703"),
];

pub struct Seeded {
    pub leads: usize,
    /// A live borrower upload link for the first demo loan (shown once, like any link).
    pub link_url: Option<String>,
}

/// Seed `per_agent` leads for each demo agent, half of them with a loan at various stages;
/// the first loan gets a needs list, two documents and a live upload link.
pub async fn seed(state: &AppState, per_agent: usize) -> anyhow::Result<Seeded> {
    let agents = [
        agent("agent-a1", "Avery Agent", "team-a", Role::Agent),
        agent("agent-a2", "Blake Broker", "team-a", Role::Agent),
        agent("agent-b1", "Casey Closer", "team-b", Role::Agent),
    ];
    let manager = agent("manager-a", "Emery Manager", "team-a", Role::Manager);
    state.agents.ensure(&state.db, &manager).await?;
    let today = time::OffsetDateTime::now_utc().date();
    let mut created = 0;
    let mut first_loan = None;
    for (a, actor) in agents.iter().enumerate() {
        state.agents.ensure(&state.db, actor).await?;
        for i in 0..per_agent {
            let n = a * 100 + i;
            let lead = demo_lead(n)
                .validate(today)
                .map_err(|errors| anyhow::anyhow!("demo lead invalid: {errors:?}"))?;
            let view = leads::ops::create(state, actor, &lead, "demo-seed")
                .await
                .map_err(|e| anyhow::anyhow!("creating a demo lead: {e}"))?;
            created += 1;
            if i % 2 == 1 {
                continue;
            }
            let Some(property) = lead.address.clone() else {
                continue;
            };
            let people = (actor, &manager);
            let loan = seed_loan(state, people, n, (view.id, property)).await?;
            first_loan.get_or_insert((loan, view.id));
        }
    }
    let link_url = match first_loan {
        Some(loan) => Some(
            seed_documents(state, &agents[0], loan)
                .await
                .map_err(|e| anyhow::anyhow!("seeding demo documents: {e}"))?,
        ),
        None => None,
    };
    Ok(Seeded {
        leads: created,
        link_url,
    })
}

/// The `n`th demo borrower: made-up names, numbers and addresses, varied by `n`.
fn demo_lead(n: usize) -> LeadInput {
    let (city, st, zip) = CITIES[n % CITIES.len()];
    let first = FIRST[n % FIRST.len()];
    let last = LAST[(n / 3) % LAST.len()];
    LeadInput {
        first_name: Some(first.into()),
        last_name: Some(last.into()),
        email: Some(format!(
            "{}.{}{n}@example.com",
            first.to_lowercase(),
            last.to_lowercase()
        )),
        phone: Some(format!("+1202555{:04}", 1000 + n)),
        ssn: Some(format!(
            "{:03}-{:02}-{:04}",
            100 + (n * 37) % 500,
            10 + n % 89,
            1000 + n
        )),
        date_of_birth: Some(format!(
            "{}-{:02}-{:02}",
            1960 + n % 35,
            1 + n % 12,
            1 + n % 28
        )),
        address: Some(Address {
            line1: format!("{} Maple Ave", 100 + n),
            line2: None,
            city: city.into(),
            state: st.into(),
            postal_code: zip.into(),
        }),
        annual_income: Some(MoneyInput(format!("{}", 55_000 + (n * 7_919) % 140_000))),
        loan_purpose: Some(
            [
                LoanPurpose::Purchase,
                LoanPurpose::Refinance,
                LoanPurpose::CashOutRefinance,
            ][n % 3],
        ),
        source: Some(["referral", "web", "open house"][n % 3].into()),
        notes: None,
        credit_consent: None,
        status: Some(
            [
                LeadStatus::New,
                LeadStatus::Contacted,
                LeadStatus::Qualified,
            ][n % 3],
        ),
    }
}

/// The `n`th demo loan for `lead`, walked some way along the status machine by its agent
/// and the team's manager, as they would; the loan's id.
async fn seed_loan(
    state: &AppState,
    (actor, manager): (&Actor, &Actor),
    n: usize,
    (lead, property): (uuid::Uuid, Address),
) -> anyhow::Result<uuid::Uuid> {
    let amount = Money::parse(&format!("{}", 180_000 + (n * 12_345) % 600_000))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let valid = loans::ops::ValidLoan {
        lead_id: lead,
        loan_type: [
            LoanType::Conventional,
            LoanType::Fha,
            LoanType::Va,
            LoanType::Jumbo,
        ][n % 4],
        amount,
        property,
    };
    let (loan, key) = loans::ops::create_valid(
        state,
        actor,
        &ReadScope::Own(actor.subject.clone()),
        &valid,
        "demo-seed",
    )
    .await
    .map_err(|e| anyhow::anyhow!("creating a demo loan: {e}"))?;
    let path: &[(LoanStatus, &Actor)] = match (n / 2) % 4 {
        0 => &[],
        1 => &[(LoanStatus::Submitted, actor)],
        2 => &[
            (LoanStatus::Submitted, actor),
            (LoanStatus::Underwriting, manager),
        ],
        _ => &[
            (LoanStatus::Submitted, actor),
            (LoanStatus::Underwriting, manager),
            (LoanStatus::Closed, manager),
        ],
    };
    let mut status = LoanStatus::Draft;
    for (to, by) in path {
        let mut tx = state.db.begin().await?;
        let moving = loans::ops::Moving {
            id: loan.id,
            lead_id: lead,
            status,
        };
        loans::ops::apply_transition(
            &mut tx,
            &key,
            &moving,
            crate::loans::ops::Step {
                to: *to,
                reason: Some("demo"),
            },
            by,
            "demo-seed",
        )
        .await
        .map_err(|e| anyhow::anyhow!("moving a demo loan: {e}"))?;
        tx.commit().await?;
        status = *to;
    }
    Ok(loan.id)
}

/// A needs list, an agent's PDF and PNG (processed by the pipeline once the service runs)
/// and a live upload link; the link's URL.
async fn seed_documents(
    state: &AppState,
    agent: &Actor,
    loan: (uuid::Uuid, uuid::Uuid),
) -> Result<String, crate::error::AppError> {
    use crate::{documents, documents::DocType, links, requests};
    let due = time::OffsetDateTime::now_utc().date() + time::Duration::days(10);
    let mut tx = state.db.begin().await?;
    let mut asked = Vec::new();
    for (doc_type, note) in [
        (DocType::BankStatement, "The last two months, every page"),
        (DocType::W2, "W-2 forms for the last two years"),
        (DocType::PhotoId, "A driver's license or passport"),
        (
            DocType::GiftLetter,
            "Only if part of the down payment is a gift",
        ),
    ] {
        let id = requests::ops::insert_request(
            state,
            &mut tx,
            agent,
            loan,
            &crate::requests::ops::Ask {
                doc_type,
                note,
                due_date: Some(due),
            },
            "demo-seed",
        )
        .await?;
        asked.push(id);
    }
    let (_, token) = links::ops::insert_link(
        state,
        &mut tx,
        agent,
        loan,
        &crate::links::ops::LinkSpec {
            email: None,
            hours: 168,
            max_files: 20,
            language: None,
        },
        "demo-seed",
    )
    .await?;
    tx.commit().await?;
    documents::ops::seed_file(
        state,
        agent,
        loan,
        crate::documents::ops::SeedFile {
            filename: "pay-stub-october.pdf",
            content_type: "application/pdf",
            doc_type: DocType::PayStub,
            document_request_id: None,
            bytes: sample_pdf("Pay stub (demo)"),
        },
    )
    .await?;
    documents::ops::seed_file(
        state,
        agent,
        loan,
        crate::documents::ops::SeedFile {
            filename: "bank-statement-page-1.png",
            content_type: "image/png",
            doc_type: DocType::BankStatement,
            document_request_id: asked.first().copied(),
            bytes: SAMPLE_PNG.to_vec(),
        },
    )
    .await?;
    Ok(format!(
        "{}/u/{token}",
        state
            .settings
            .server
            .public_base_url
            .as_str()
            .trim_end_matches('/')
    ))
}

/// A one-page PDF with a line of text and a correct cross-reference table.
fn sample_pdf(text: &str) -> Vec<u8> {
    let stream = format!("BT /F1 18 Tf 72 720 Td ({text}) Tj ET");
    let objects = [
        "<< /Type /Catalog /Pages 2 0 R >>".to_owned(),
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_owned(),
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>".to_owned(),
        format!("<< /Length {} >>\nstream\n{stream}\nendstream", stream.len()),
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>".to_owned(),
    ];
    let mut pdf = b"%PDF-1.4\n".to_vec();
    let mut offsets = Vec::new();
    for (i, object) in objects.iter().enumerate() {
        offsets.push(pdf.len());
        pdf.extend_from_slice(format!("{} 0 obj\n{object}\nendobj\n", i + 1).as_bytes());
    }
    let xref = pdf.len();
    pdf.extend_from_slice(
        format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).as_bytes(),
    );
    for offset in offsets {
        pdf.extend_from_slice(format!("{offset:010} 00000 n \n").as_bytes());
    }
    pdf.extend_from_slice(
        format!(
            "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
            objects.len() + 1
        )
        .as_bytes(),
    );
    pdf
}

/// A valid 1×1 PNG.
const SAMPLE_PNG: [u8; 67] = [
    0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 0x00, 0x00, 0x00, 0x0D, 0x49, 0x48, 0x44, 0x52,
    0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x00, 0x00, 0x1F, 0x15, 0xC4,
    0x89, 0x00, 0x00, 0x00, 0x0A, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9C, 0x63, 0x00, 0x01, 0x00, 0x00,
    0x05, 0x00, 0x01, 0x0D, 0x0A, 0x2D, 0xB4, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45, 0x4E, 0x44, 0xAE,
    0x42, 0x60, 0x82,
];
