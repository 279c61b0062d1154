"""Where the emulator knowingly differs from Pluggy, and why: the one list (rendered into README.md here).

`DELIBERATE_DIFFERENCES` are behaviours a client can observe that Pluggy does not have (or lacks one Pluggy
has), each kept on purpose. `SOURCE_CHOICES` are places where Pluggy's sources disagree or say nothing, and
what the emulator picked. tests/conformance/test_pluggy_sdk.py runs Pluggy's Node SDK against the emulator:
every SDK call it has to judge differently from real Pluggy names its difference here (`sdk_calls`), and a
difference that names a call the suite no longer makes fails it.

Regenerate the README section after editing: `python -m pluggy_emulator.differences --write`.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Difference:
    key: str
    what: str  # what the emulator does, against what Pluggy does
    why: str
    sdk_calls: tuple[str, ...] = ()  # conformance records (tests/conformance/sdk_calls.mjs) it explains


DELIBERATE_DIFFERENCES: tuple[Difference, ...] = (
    Difference(
        "loopback-webhooks",
        "With `allow_loopback_webhooks=True` (the default; `--strict-webhook-urls` turns it off) a webhook URL "
        "whose host is this machine's loopback (127.0.0.0/8, ::1, `localhost`, `host.docker.internal`) may use "
        "http and any port, for Webhook resources, items and connect tokens alike. Pluggy refuses them all "
        "(https only, port 443, no IP, no localhost). Every other URL follows Pluggy's rules either way.",
        "Tests, benchmarks and `pluggy-pipeline local` receive deliveries on 127.0.0.1 without TLS. The SDK "
        "conformance suite runs with the option off, so it sees Pluggy's refusals.",
    ),
    Difference(
        "no-dns-check",
        "Webhook hosts are not resolved: a well-formed public name is accepted even if no DNS record exists or "
        'it points at a private address, which Pluggy refuses ("could not be resolved").',
        "The emulator and its tests run offline; names are judged by shape (no IP, no reserved suffix).",
        ("createWebhook: a name no DNS resolves",),
    ),
    Difference(
        "no-live-connectors",
        "Only sandbox connectors exist, so `GET /connectors` without `sandbox=true` is an empty page; Pluggy "
        "lists its hundreds of live institutions there.",
        "The emulator has no real institutions to offer; sandbox connectors stay behind `sandbox=true` as on "
        "Pluggy, so a client that forgets the filter finds nothing, as it would not find Pluggy Bank.",
        ("fetchConnectors: no filter",),
    ),
    Difference(
        "sandbox-mfa-connectors",
        'The sandbox MFA flows live on connectors 1 ("Pluggy Bank MFA 1-step": a `token` credential with '
        '`mfa: true`, sent with the login) and 2 ("Pluggy Bank MFA 2-step": WAITING_USER_INPUT, then '
        "`POST /items/{id}/mfa`); token `123456` passes, any other gives INVALID_CREDENTIALS_MFA. Connector 3 "
        '("Pluggy Bank App Authorization") waits in WAITING_USER_ACTION (`user-action-control`). Pluggy\'s '
        "sandbox has MFA connectors too, but no source we have gives their ids or names.",
        "The MFA and user-action flows of pluggy-api.md sections 9 and 11 must be reachable through the API; "
        "the ids are the emulator's choice and may not match Pluggy's.",
        (
            "fetchConnectors: sandbox",
            "fetchConnectors: countries and types",
            "createItem: MFA 2-step",
            "fetchItem: waiting for MFA",
            "updateItemMFA: sandbox token",
            "fetchItem: after MFA",
            "updateItemMFA: not waiting",
            "createItem: MFA 2-step, wrong token",
            "updateItemMFA: wrong token",
            "fetchItem: after wrong MFA",
            "createItem: MFA 1-step",
            "createItem: MFA 1-step, wrong token",
            "createItem: MFA 1-step, no token",
        ),
    ),
    Difference(
        "instant-syncs",
        "Unless `timed=True` (`--timed`), a sync runs inside the request that starts it (`POST /items`, "
        "`PATCH /items/{id}`, `POST /items/{id}/mfa`, the control routes): the answer is the UPDATING snapshot, "
        "and the next `GET /items/{id}` already shows the end state. No `*_IN_PROGRESS` step can be observed, no "
        "rows arrive after UPDATED, every row of a sync carries one `createdAt`, and item/login_succeeded comes "
        "on first syncs only. Waits for the user have no deadline, and a pending device authorization no "
        "30-minute timer: they last until a call ends them. A Pluggy sandbox sync takes minutes. Timed mode runs "
        "syncs as Pluggy does (README, Time), with its clock compressed by `time_scale`.",
        "Most suites test what the pipeline does with end states; instant syncs keep them fast and "
        "deterministic, and clients that poll like Pluggy's own helper (while UPDATING or MERGING) reach the same "
        "end states. Timed mode is opt-in so those suites keep that; the suites about time turn it on.",
    ),
    Difference(
        "payments-from-control-api",
        "Payment resources cannot be created through Pluggy's routes (`POST /payments/requests`, "
        "`/payments/intents`, schedules, automatic Pix, bulk, smart transfers): they come from "
        "`create_payment_request` and `send_payment_event` (or `/_emulator/payment_requests`, "
        "`/_emulator/payment_events`). The reads the pipeline makes are served: payment requests (one and "
        "the list), intents (one and by request), schedules (the list and one).",
        "The pipeline only reads payments after a webhook; creating them belongs to a payer's flow the "
        "emulator does not model.",
        (
            "payments.fetchPaymentRequest",
            "payments.fetchPaymentRequests",
            "payments.fetchPaymentIntent",
            "payments.fetchPaymentIntents: by request",
            "payments.fetchScheduledPayments",
            "payments.fetchScheduledPayment",
        ),
    ),
    Difference(
        "products-not-emulated",
        "The live account balance, category rules, boletos, payment customers and recipients, bulk payments, "
        "smart accounts and smart transfers answer 404 (`Cannot GET ...`). Account statements answer an empty "
        "page. (Bills, investments and their transactions, loans, identity and consents are served.)",
        "The pipeline does not read them; the sandbox produces no statements.",
    ),
    Difference(
        "record-only-webhooks",
        "With `deliver_webhooks=False` (delivery is on by default) events are recorded (`events()`) but never "
        "sent anywhere.",
        "Suites that register public https URLs (as the SDK conformance suite does) may not leave 127.0.0.1.",
    ),
    Difference(
        "user-action-control",
        "What the account holder does at the bank, which no Pluggy API call does, is a control call: "
        "`complete_user_action(item_id, granted)` (`POST /_emulator/items/{id}/user_action`) ends a "
        "WAITING_USER_ACTION wait (connector 3, `set_waiting_user_action`) and answers a pending device "
        "authorization (username `user-authorization-pending`) ahead of Pluggy's own sync; refused, either ends "
        "in USER_AUTHORIZATION_NOT_GRANTED.",
        "Pluggy resumes by itself once the user acts (pluggy-api.md section 11); a test has to be able to play "
        "that user, at the moment it chooses, to reach the granted and the refused outcomes.",
    ),
    Difference(
        "control-api",
        "`/_emulator/*` routes (no API key) create items and syncs, inject faults, change connector health, "
        "send payment events and read the ground truth; Pluggy has none.",
        "Tests and the local stack drive the emulator over HTTP as well as from Python.",
    ),
    Difference(
        "rate-limits",
        "Instant mode has no rate limit unless `rate_limit_per_minute` asks for one (an int, a per-route "
        'mapping, or "pluggy"). Timed mode has Pluggy\'s per-endpoint limits by default (360/min on `POST /auth`, '
        "account, transaction and investment reads, `/v2/transactions` included; 20/min on `PATCH /items/{id}`). "
        "Either way "
        "the count is one fixed window per route for all callers together; Pluggy counts per source IP and does "
        "not say how its window moves.",
        "Most instant-mode tests make bursts of calls that are not about rate limiting; the fault suites and "
        "timed mode turn it on. Every caller of a local emulator is 127.0.0.1 anyway.",
    ),
    Difference(
        "signature-header",
        "With a `signing_key`, deliveries carry `X-Pluggy-Signature` (hex HMAC-SHA256 of the body). Pluggy's "
        "opt-in signing exists, but no source we have confirms the header name or algorithm.",
        "The receiver's signature path needs something to verify; the header is the one third-party code uses.",
    ),
    Difference(
        "time-scale",
        "Webhook retries wait 60 s x `time_scale` (3 retries, then dropped) and a webhook is disabled after "
        "`disable_webhook_after_failures` (10) notifications failed for good; Pluggy waits a minute and does "
        "not document when it disables. In timed mode the emulator's clock runs 1 / `time_scale` emulator seconds "
        "per wall second, so every duration (execution steps, the MFA and user-action deadlines, the device "
        "authorization's 30 minutes, late rows, the rate-limit minute) shrinks alike while a client's own pace "
        "does not; `RateLimit-Reset` and `Retry-After` then give wall seconds with 3 decimals (Pluggy: whole "
        "seconds, `Retry-After` always 60), and API keys still expire on real time. Tests may also pause, "
        "resume and advance the emulator's clock (`pause_clock`, `advance_clock`).",
        "Tests cannot wait minutes for a sync or a retry; headers in wall seconds let a client that honours "
        "them wait just until the window resets.",
    ),
)

SOURCE_CHOICES: tuple[tuple[str, str], ...] = (
    (
        "`POST /webhooks` answers 200",
        "The OAS documents 201, but the SDK rejects any mutation answer other than 200 and Pluggy's own "
        "integration tests create webhooks through it against Pluggy, so Pluggy evidently answers 200.",
    ),
    (
        "Legacy `GET /transactions`",
        "Served (deprecated) through 2026-12-31 by the emulator's clock, Sao Paulo day, then 410 "
        "`ENDPOINT_REMOVED`. Default page size 20 (SDK comment; the OAS says 500), `pageSize` up to 500; `ids` "
        "override `from`/`to`; `billId` and `createdAtFrom` filter too; newest first like `/v2/transactions`.",
    ),
    (
        "The deprecated `id` in webhook payloads",
        "The SDK types it as required on every event; the docs' examples omit it. The emulator sends it: the "
        "item id on item and transaction events, the connector id on connector events, the intent, schedule "
        "or request id on payment events. Forged events (`send_event`) carry what they are given.",
    ),
    (
        "`sandbox` on connectors",
        "No source has a `sandbox` field on the Connector object: `isSandbox: true` plus the `?sandbox=true` "
        "list filter are what the SDK knows, so the emulator adds no `sandbox` field.",
    ),
    (
        "Card transaction `balance`",
        "The SDK types a number; card statements have no running balance, so card rows carry 0.",
    ),
    (
        "`bankData.hasReservedBalance` / `reservedBalances`",
        "Required keys in the SDK type: `false` and `null` (no reserved balances in the sandbox).",
    ),
    (
        "Categories",
        "The catalog is the subset the sandbox rows use plus their parents; the Portuguese "
        "`descriptionTranslated` texts are the emulator's. `GET /categories` answers the page envelope.",
    ),
    (
        "`PATCH /transactions/{id}`",
        "Sets `categoryId` and `category`, moves `updatedAt`, sends no webhook (none is documented); an "
        "unknown category is a 400.",
    ),
    (
        "MFA 1-step updates",
        "`PATCH /items/{id}` on an MFA 1-step item without a `token` is a 400 "
        "`CONNECTOR_REQUIRED_PARAMETER_VALIDATION_ERROR` (`data.parameter`); the reuse rule "
        "(`MFA_PARAMERTER_WAS_ALREADY_USED_ERROR`) is not applied, since the sandbox token never changes.",
    ),
    (
        "`POST /items/{id}/mfa` errors",
        "An item not waiting for input, or a body without the parameter, gets a 400 without `codeDescription` "
        "(not documented). The parameter expires 5 minutes after it is asked (no source gives the length; "
        "`SyncTiming.mfa_timeout` in timed mode).",
    ),
    (
        "Timed sync steps and their lengths",
        "Pluggy publishes no per-step sequence or timing. Timed mode follows section 11's order: CREATING and "
        "CREATED (a new item; an update starts at CREATED), LOGIN_IN_PROGRESS, WAITING_USER_INPUT and "
        "LOGIN_MFA_IN_PROGRESS on the MFA 2-step connector, WAITING_USER_ACTION and LOGIN_IN_PROGRESS again "
        "(`login_mfa` long) on the app authorization connector, then ACCOUNTS, TRANSACTIONS, PAYMENT_DATA and "
        "CREDITCARDS_IN_PROGRESS (the four products items carry), then status MERGING (its `executionStatus` "
        "keeps the last step), then UPDATED with SUCCESS or PARTIAL_SUCCESS. Sandbox usernames that fail, and "
        "MFA 1-step tokens, fail when LOGIN_IN_PROGRESS ends. `SyncTiming`'s lengths make a new item's sync "
        "175 s (sandbox syncs take 2-4 minutes).",
    ),
    (
        "Timed webhook moments",
        "item/login_succeeded when the login succeeds, on every sync (the docs: logged in and collecting); "
        "item/waiting_user_input when the MFA is asked, item/waiting_user_action when the action is; "
        "transactions/created per account when that account's "
        "rows become visible during an update (an item's first sync leaves its history to item/created); "
        "item/created or item/updated when MERGING ends, then transactions/updated and transactions/deleted "
        "(the docs: after the merge); item/error when the login, the MFA or the user action fails or times "
        "out, and when the login ends USER_AUTHORIZATION_PENDING.",
    ),
    (
        "Rows after UPDATED",
        "Pluggy says only that transactions can lag briefly after UPDATED. Timed mode makes 10% of a sync's new "
        "rows (`late_fraction`; at least one, never all of an account's) visible 15 to 90 s after UPDATED "
        "(`late_delay`), each account's together, with a transactions/created whose `transactionsCreatedAtFrom` "
        "is their earliest `createdAt`. A sync's rows get `createdAt` values spread over their account's "
        "collection, late ones from its first half: earlier than rows already visible, as parallel ingestion "
        "would leave them.",
    ),
    (
        "Accounts during a timed sync",
        "A new account becomes visible when ACCOUNTS_IN_PROGRESS ends, with its balance; an existing account's "
        "balance and `updatedAt` move when that step starts, and again when deletions land at the merge.",
    ),
    (
        "USER_INPUT_TIMEOUT",
        "Inferred from the name: in timed mode an item still WAITING_USER_INPUT at `parameter.expiresAt` ends "
        "OUTDATED with USER_INPUT_TIMEOUT and item/error; an MFA sent later is the 400 of an item not waiting. "
        "The same for WAITING_USER_ACTION at `userAction.expiresAt`: section 11 gives both deadlines one "
        "meaning, and no other code names a missed action.",
    ),
    (
        "`ITEM_ALREADY_UPDATING`",
        "The docs name the code, not its status: in timed mode `PATCH /items/{id}` on an item UPDATING or "
        "MERGING is a 400 with that `codeDescription`. An item WAITING_USER_INPUT or WAITING_USER_ACTION may be "
        "patched: the wait ends and a new sync starts.",
    ),
    (
        "WAITING_USER_ACTION",
        "The SDK types `userAction` `{instructions, type 'qr' or 'authorize-access', attributes?, expiresAt?}`; "
        "the emulator's (connector 3) is `authorize-access` with its own instructions and no `attributes`, "
        "valid 5 minutes (no source gives the length; `SyncTiming.user_action_timeout` in timed mode, as long "
        "as the MFA's). The action granted, timed mode resumes the login (LOGIN_IN_PROGRESS, `login_mfa`) before "
        "logging in; refused, LOGIN_ERROR with USER_AUTHORIZATION_NOT_GRANTED (the code for a user who refused). "
        "Items that wait at every login are not auto-synced, as section 11 says of MFA ones.",
    ),
    (
        "USER_AUTHORIZATION_PENDING",
        "A finished error with item/error (the docs), status OUTDATED: the credentials were right and Pluggy "
        "resumes by itself, so it is not a LOGIN_ERROR. `error.attributes` (a string map in the SDK, content "
        "unknown) is `{deviceId, authorizationRequestedAt}`; the item/error payload keeps `{code, message}`. "
        "Section 11 infers that the client then PATCHes; seed 001 says the success arrives later by webhook "
        "alone, so Pluggy's own sync (triggeredBy SYNC, from CREATED) runs 30 minutes later (seed 001; "
        "`SyncTiming.authorization_delay`) and ends item/created if the item never had a successful sync, "
        "item/updated otherwise. A PATCH before then logs in again and asks again.",
    ),
    (
        "Webhook URL messages",
        "Pluggy's wording where a source quotes it (https, IP, malformed or localhost); the port, credentials, "
        "duplicate and per-event-limit messages are the emulator's. Bodies are `{code, message}` only.",
    ),
    (
        "Products beyond accounts",
        "An item requests every product of the sandbox connector unless `POST /items` (or the connect token's "
        "`options.products`) names some; `statusDetail` (on PARTIAL_SUCCESS or warnings) has every key, null "
        "for a product not requested. Bills, investments (2 or 3, with their transactions), one loan, the "
        "identity and one consent are generated at the item's first successful sync (in timed mode visible at "
        "UPDATED: no INVESTMENTS_IN_PROGRESS or other product steps are played). Bills: one per closed month "
        "of the card's rows, id = the rows' `billId`, `totalAmount` = their purchases, paid in full once due; "
        "`GET /bills` for a bank account is an empty page. Lists take `page`/`pageSize` (default 500, the "
        "OAS's; at most 500) and answer `totalPages` 1 when empty. The consent lasts 12 months and its "
        "`expiresAt` is the item's `consentExpiresAt` (Pluggy sets it on Open Finance items only); such an item "
        "also carries `resourcesCollectedAt` and `hasResourcesPendingAuthorization` (PYSDK's Item; not in the "
        "Node SDK's types), false unless `sync_item(resources_pending=True)`. "
        "`GET /identity` with an itemId that is not a UUID is a 400 `itemId must be a UUID`, for an item "
        "without identity (unknown, not requested, not synced) a 404 `IDENTITY_NOT_FOUND`.",
    ),
    (
        "Not-found codes nobody documents",
        "`SCHEDULED_PAYMENT_NOT_FOUND` (schedule get-one), `CONNECTOR_NOT_FOUND` (unknown connector, also on "
        "`POST /items`), `CATEGORY_NOT_FOUND` (documented).",
    ),
)

# The distribution's README, in the source tree (a --write is a maintainer's step).
README = Path(__file__).resolve().parent.parent / "README.md"
BEGIN = "<!-- differences:begin (generated by `python -m pluggy_emulator.differences --write`) -->"
END = "<!-- differences:end -->"


def render_markdown() -> str:
    """The README section: one table of deliberate differences, one of choices where sources disagree."""
    lines = [
        BEGIN,
        "### Deliberate differences",
        "",
        "| key | what the emulator does | why |",
        "| --- | --- | --- |",
    ]
    lines += [f"| `{d.key}` | {d.what} | {d.why} |" for d in DELIBERATE_DIFFERENCES]
    lines += [
        "",
        "### Where Pluggy's sources disagree or are silent",
        "",
        "| topic | what the emulator picked |",
        "| --- | --- |",
    ]
    lines += [f"| {topic} | {choice} |" for topic, choice in SOURCE_CHOICES]
    lines.append(END)
    return "\n".join(lines) + "\n"


def updated_readme(text: str) -> str:
    """README text with the generated section replaced (or appended when absent)."""
    section = render_markdown()
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        tail = rest.split(END, 1)[1].lstrip("\n")
        return head + section + ("\n" + tail if tail else "")
    return text.rstrip("\n") + "\n\n" + section


def main(argv: list[str]) -> int:
    if argv == ["--write"]:
        README.write_text(updated_readme(README.read_text(encoding="utf-8")), encoding="utf-8")
        return 0
    sys.stdout.write(render_markdown())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
