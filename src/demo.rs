//! `loanfolio admin demo-seed`: a few agents' worth of realistic leads and loans, so a
//! newcomer's `scripts/dev` shows data. The agents are the test OpenID Provider's users, so
//! signing in as them shows their own files. Synthetic data only: generated SSNs, phone
//! numbers in the 555 fiction range, emails at example.com.

use crate::app::AppState;
use crate::auth::{Actor, ReadScope, Role};
use crate::domain::lead::{Address, LeadInput, LeadStatus, LoanPurpose};
use crate::domain::loan::{LoanStatus, LoanType};
use crate::domain::money::{Money, MoneyInput};
use crate::http::{leads, loans};

fn agent(subject: &str, name: &str, team: &str, role: Role) -> Actor {
    Actor {
        subject: subject.into(),
        display_name: name.into(),
        email: Some(format!("{subject}@lender.test")),
        roles: vec![role],
        team: Some(team.into()),
        auth_time: None,
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

/// Seed `per_agent` leads for each demo agent, half of them with a loan at various stages.
pub async fn seed(state: &AppState, per_agent: usize) -> anyhow::Result<usize> {
    let agents = [
        agent("agent-a1", "Avery Agent", "team-a", Role::Agent),
        agent("agent-a2", "Blake Broker", "team-a", Role::Agent),
        agent("agent-b1", "Casey Closer", "team-b", Role::Agent),
    ];
    let manager = agent("manager-a", "Emery Manager", "team-a", Role::Manager);
    state.agents.ensure(&state.db, &manager).await?;
    let today = time::OffsetDateTime::now_utc().date();
    let mut created = 0;
    for (a, actor) in agents.iter().enumerate() {
        state.agents.ensure(&state.db, actor).await?;
        for i in 0..per_agent {
            let n = a * 100 + i;
            let (city, st, zip) = CITIES[n % CITIES.len()];
            let first = FIRST[n % FIRST.len()];
            let last = LAST[(n / 3) % LAST.len()];
            let input = LeadInput {
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
                status: Some(
                    [
                        LeadStatus::New,
                        LeadStatus::Contacted,
                        LeadStatus::Qualified,
                    ][n % 3],
                ),
            };
            let lead = input
                .validate(today)
                .map_err(|errors| anyhow::anyhow!("demo lead invalid: {errors:?}"))?;
            let view = leads::create(state, actor, &lead, "demo-seed")
                .await
                .map_err(|e| anyhow::anyhow!("creating a demo lead: {e}"))?;
            created += 1;
            if i % 2 == 1 {
                continue;
            }
            let amount = Money::parse(&format!("{}", 180_000 + (n * 12_345) % 600_000))
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let Some(property) = lead.address.clone() else {
                continue;
            };
            let (loan, key) = loans::create(
                state,
                actor,
                &ReadScope::Own(actor.subject.clone()),
                view.id,
                [
                    LoanType::Conventional,
                    LoanType::Fha,
                    LoanType::Va,
                    LoanType::Jumbo,
                ][n % 4],
                amount,
                &property,
                "demo-seed",
            )
            .await
            .map_err(|e| anyhow::anyhow!("creating a demo loan: {e}"))?;
            // Walk some loans along the status machine, as their agent and manager would.
            let path: &[(LoanStatus, &Actor)] = match (n / 2) % 4 {
                0 => &[],
                1 => &[(LoanStatus::Submitted, actor)],
                2 => &[
                    (LoanStatus::Submitted, actor),
                    (LoanStatus::Underwriting, &manager),
                ],
                _ => &[
                    (LoanStatus::Submitted, actor),
                    (LoanStatus::Underwriting, &manager),
                    (LoanStatus::Closed, &manager),
                ],
            };
            let mut status = LoanStatus::Draft;
            for (to, by) in path {
                let mut tx = state.db.begin().await?;
                let moving = loans::Moving {
                    id: loan.id,
                    lead_id: view.id,
                    status,
                };
                loans::apply_transition(&mut tx, &key, &moving, *to, by, Some("demo"), "demo-seed")
                    .await
                    .map_err(|e| anyhow::anyhow!("moving a demo loan: {e}"))?;
                tx.commit().await?;
                status = *to;
            }
        }
    }
    Ok(created)
}
