"""Write jobs/demo.jsonl: 150 short supplier invoices to extract into schema-valid JSON (deterministic)."""

from __future__ import annotations

import json
import random
from pathlib import Path

SCHEMA = {
    "type": "object",
    "properties": {
        "supplier": {"type": "string"},
        "invoice_number": {"type": "string"},
        "date": {"type": "string"},
        "currency": {"type": "string", "enum": ["EUR", "USD", "GBP"]},
        "total": {"type": "number"},
        "lines": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"description": {"type": "string"}, "amount": {"type": "number"}},
                "required": ["description", "amount"],
                "additionalProperties": False,
            },
        },
    },
    "required": ["supplier", "invoice_number", "date", "currency", "total", "lines"],
    "additionalProperties": False,
}
SUPPLIERS = ["Acme Tools", "Northwind Traders", "Globex", "Initech", "Umbrella Supplies", "Stark Office"]
ITEMS = [
    "paper reams",
    "toner cartridges",
    "desk lamps",
    "USB cables",
    "monitor arms",
    "coffee beans",
    "chairs",
]


def main() -> None:
    rng = random.Random(7)
    out = Path(__file__).with_name("demo.jsonl")
    with out.open("w", encoding="utf-8") as f:
        for i in range(1, 151):
            lines = [(rng.choice(ITEMS), round(rng.uniform(5, 400), 2)) for _ in range(rng.randint(1, 4))]
            currency = rng.choice(["EUR", "USD", "GBP"])
            text = "\n".join(
                [
                    f"INVOICE {rng.randint(10000, 99999)}",
                    f"From: {rng.choice(SUPPLIERS)}",
                    f"Date: 2026-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
                    "",
                ]
                + [f"{d} .......... {a:.2f} {currency}" for d, a in lines]
                + ["", f"TOTAL {sum(a for _, a in lines):.2f} {currency}"]
            )
            body = {
                "model": "gpt-4.1-mini",
                "messages": [
                    {
                        "role": "system",
                        "content": "Extract the invoice into JSON that follows the schema exactly.",
                    },
                    {"role": "user", "content": text},
                ],
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "invoice", "schema": SCHEMA, "strict": True},
                },
                "max_tokens": 300,
                "temperature": 0,
            }
            f.write(
                json.dumps(
                    {
                        "custom_id": f"invoice-{i:04d}",
                        "method": "POST",
                        "url": "/v1/chat/completions",
                        "body": body,
                    }
                )
                + "\n"
            )


if __name__ == "__main__":
    main()
