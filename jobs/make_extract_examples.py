"""Write the extraction examples (deterministic): jobs/invoices/*.txt (supplier invoices as plain text) and
jobs/tickets.csv (support tickets to triage). Their schemas and spec files sit next to them."""

from __future__ import annotations

import csv
import random
from pathlib import Path

HERE = Path(__file__).parent
SUPPLIERS = ["Acme Tools", "Northwind Traders", "Globex", "Initech", "Umbrella Supplies", "Stark Office"]
ITEMS = ["toner cartridges", "paper reams", "monitor arms", "desk lamps", "usb-c hubs", "whiteboard markers"]
PRODUCTS = ["the mobile app", "the web dashboard", "the API", "billing", "the desktop client"]
PROBLEMS = [
    ("I was charged twice for my subscription this month, please refund one of the payments.", "billing"),
    ("The app crashes every time I open the settings page since the last update.", "bug"),
    ("How do I export my reports to CSV? I cannot find the option anywhere.", "how-to"),
    ("Our whole team cannot log in, we get an error 500. This is blocking our release today!", "outage"),
    ("It would be great if you supported dark mode in the dashboard.", "feature request"),
]


def invoices(n: int = 12) -> None:
    rng = random.Random(7)
    folder = HERE / "invoices"
    folder.mkdir(exist_ok=True)
    for i in range(1, n + 1):
        currency = rng.choice(["EUR", "USD", "GBP"])
        lines = [(rng.choice(ITEMS), round(rng.uniform(5, 400), 2)) for _ in range(rng.randint(1, 4))]
        body = "\n".join(f"{item} .......... {amount:.2f} {currency}" for item, amount in lines)
        due = f"Payment due: 2026-{rng.randint(5, 12):02d}-{rng.randint(1, 28):02d}\n" if rng.random() < 0.6 else ""
        text = (
            f"INVOICE {rng.randint(10000, 99999)}\nFrom: {rng.choice(SUPPLIERS)}\n"
            f"Date: 2026-{rng.randint(1, 4):02d}-{rng.randint(1, 28):02d}\n{due}\n{body}\n\n"
            f"TOTAL {sum(a for _, a in lines):.2f} {currency}\n"
        )
        (folder / f"invoice-{i:03d}.txt").write_text(text)


def tickets(n: int = 40) -> None:
    rng = random.Random(11)
    with (HERE / "tickets.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["ticket_id", "customer", "text"])
        for i in range(1, n + 1):
            problem, _ = rng.choice(PROBLEMS)
            writer.writerow([f"T-{1000 + i}", f"customer{rng.randint(1, 99)}@example.com",
                             f"About {rng.choice(PRODUCTS)}: {problem}"])  # fmt: skip


if __name__ == "__main__":
    invoices()
    tickets()
