// Drives Pluggy's official Node SDK (`pluggy-sdk`, pinned in package.json beside this file) against a base
// URL and records what every call gives back; tests/conformance/test_pluggy_sdk.py judges the record.
//
//   PLUGGY_API_URL=http://127.0.0.1:PORT node sdk_calls.mjs <config.json> <result.json>
//
// The SDK (0.90.0) takes its base URL from PLUGGY_API_URL only (dist/baseApi.js); the constructor has no
// baseUrl option. config.json: {sdkDir, clientId, clientSecret, payments: {requestId, intentId, scheduleId},
// loopbackUrl, dateFrom}. `sdkDir` is the folder whose node_modules holds the SDK (the test's npm cache).
// Each record: {name, method, ok, value | error, facts}. `error` is what the SDK rejected with: Pluggy's error
// body for a non-2xx answer, the request body for a 2xx other than 200 on a mutation (an SDK quirk), or an
// exception (with the HTTP answer when it has one). `facts` are checks only JavaScript can make (a date revived into a Date, a typeof).
// The only calls that are not the SDK's are the emulator's control routes (`control:` records), used to
// inject a 429.

import { readFileSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import path from 'node:path'

const [configPath, resultPath] = process.argv.slice(2)
const config = JSON.parse(readFileSync(configPath, 'utf8'))
const requireSdk = createRequire(path.join(config.sdkDir, 'package.json'))
const { PluggyClient } = requireSdk('pluggy-sdk')
const sdkVersion = requireSdk('pluggy-sdk/package.json').version
const baseUrl = process.env.PLUGGY_API_URL

const NON_EXISTENT_UUID = '00000000-0000-0000-0000-000000000000'
const SANDBOX = { user: 'user-ok', password: 'password-ok' }
const records = []

function describeRejection(error) {
  if (error instanceof Error && error.response) {
    // An HTTPError the SDK let through (getApiKey does not catch): keep the answer it carries.
    return { kind: 'http-error', status: error.response.statusCode, body: error.response.body, message: error.message }
  }
  if (error instanceof Error) return { kind: 'exception', message: String(error.message || error) }
  return { kind: 'body', body: error === undefined ? null : error }
}

async function call(name, method, fn, facts = () => ({})) {
  const started = Date.now()
  try {
    const value = await fn()
    const record = { name, method, ok: true, value: value === undefined ? null : value, ms: Date.now() - started }
    try {
      record.facts = facts(value)
    } catch (error) {
      record.facts = { factsError: String(error) }
    }
    records.push(record)
    return value
  } catch (error) {
    records.push({ name, method, ok: false, error: describeRejection(error), ms: Date.now() - started })
    return undefined
  }
}

const isDate = value => value instanceof Date && !Number.isNaN(value.getTime())
const sleep = ms => new Promise(resolve => setTimeout(resolve, ms))

// Poll like Pluggy's own integration helper: while UPDATING or MERGING, fetch again.
async function settle(client, itemId) {
  let item = await client.fetchItem(itemId)
  for (let i = 0; i < 100 && ['UPDATING', 'MERGING'].includes(item.status); i++) {
    await sleep(50)
    item = await client.fetchItem(itemId)
  }
  return item
}

const itemFacts = item => ({
  createdAtIsDate: isDate(item.createdAt),
  updatedAtIsDate: isDate(item.updatedAt),
  connectorCreatedAtIsDate: isDate(item.connector.createdAt),
})
const webhookFacts = hook => ({ createdAtIsDate: isDate(hook.createdAt), updatedAtIsDate: isDate(hook.updatedAt) })
const rowFacts = rows => ({
  count: rows.length,
  uniqueIds: new Set(rows.map(t => t.id)).size,
  datesAreDates: rows.every(t => isDate(t.date) && isDate(t.createdAt) && isDate(t.updatedAt)),
  balancesAreNumbers: rows.every(t => typeof t.balance === 'number'),
  amountsAreNumbers: rows.every(t => typeof t.amount === 'number'),
})

async function control(name, route, body) {
  const response = await fetch(`${baseUrl}${route}`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify(body),
  })
  records.push({ name: `control: ${name}`, method: null, ok: response.ok, value: await response.json() })
}

async function main() {
  const client = new PluggyClient({ clientId: config.clientId, clientSecret: config.clientSecret })
  const wrong = new PluggyClient({ clientId: config.clientId, clientSecret: 'not-the-secret' })

  // --- auth and connect tokens --------------------------------------------------------------------
  await call('auth', 'getApiKey', () => client.getApiKey(), key => ({ jwtParts: key.split('.').length }))
  await call('auth: wrong secret', 'getApiKey', () => wrong.getApiKey())
  await call('createConnectToken: no item', 'createConnectToken', () => client.createConnectToken())

  // --- connectors -----------------------------------------------------------------------------------
  await call('fetchConnectors: sandbox', 'fetchConnectors', () => client.fetchConnectors({ sandbox: true }))
  await call('fetchConnectors: no filter', 'fetchConnectors', () => client.fetchConnectors())
  await call('fetchConnectors: countries and types', 'fetchConnectors', () =>
    client.fetchConnectors({ sandbox: true, countries: ['BR'], types: ['PERSONAL_BANK'], name: 'pluggy' })
  )
  await call('fetchConnector: sandbox 0', 'fetchConnector', () => client.fetchConnector(0), c => ({
    createdAtIsDate: isDate(c.createdAt),
  }))
  await call('fetchConnector: unknown', 'fetchConnector', () => client.fetchConnector(99999999))
  await call('validateParameters: sandbox credentials', 'validateParameters', () =>
    client.validateParameters(0, SANDBOX)
  )
  await call('validateParameters: missing password', 'validateParameters', () =>
    client.validateParameters(0, { user: 'user-ok' })
  )

  // --- items -----------------------------------------------------------------------------------------
  const created = await call(
    'createItem: sandbox user-ok',
    'createItem',
    () =>
      client.createItem(0, SANDBOX, {
        clientUserId: 'conformance-user',
        webhookUrl: 'https://example.com/pluggy/item-hook',
      }),
    itemFacts
  )
  const itemId = created?.id
  await call('fetchItem: until finished', 'fetchItem', () => settle(client, itemId), itemFacts)
  await call('fetchItem: unknown', 'fetchItem', () => client.fetchItem(NON_EXISTENT_UUID))
  await call('createItem: bad webhookUrl', 'createItem', () =>
    client.createItem(0, SANDBOX, { webhookUrl: 'https://localhost/hook' })
  )
  await call('createItem: wrong password', 'createItem', async () =>
    settle(client, (await client.createItem(0, { user: 'user-ok', password: 'wrong' })).id)
  )
  await call('createItem: unknown connector', 'createItem', () => client.createItem(99999999, SANDBOX))
  await call('createConnectToken: item and options', 'createConnectToken', () =>
    client.createConnectToken(itemId, {
      clientUserId: 'conformance-user',
      webhookUrl: 'https://example.com/pluggy/connect-hook',
      avoidDuplicates: true,
    })
  )
  await call('createConnectToken: unknown item', 'createConnectToken', () =>
    client.createConnectToken(NON_EXISTENT_UUID)
  )
  await call('createConnectToken: localhost webhookUrl', 'createConnectToken', () =>
    client.createConnectToken(undefined, { webhookUrl: 'https://localhost/hook' })
  )
  await call('updateItem: no parameters', 'updateItem', () => client.updateItem(itemId), itemFacts)
  await call('updateItem: options', 'updateItem', () =>
    client.updateItem(itemId, SANDBOX, { clientUserId: 'conformance-user-2' })
  )
  await call('fetchItem: after update', 'fetchItem', () => settle(client, itemId))

  // The SDK retries a 429 (got: twice, every method): the emulator answers one, then the real answer.
  await control('429 on GET /items/{id}', '/_emulator/faults', {
    route: 'GET /items/{id}',
    kind: '429',
    count: 1,
    retryAfterSeconds: 1,
  })
  await call('fetchItem: after one 429', 'fetchItem', () => client.fetchItem(itemId))

  // --- accounts --------------------------------------------------------------------------------------
  const accounts = await call('fetchAccounts', 'fetchAccounts', () => client.fetchAccounts(itemId))
  await call('fetchAccounts: CREDIT', 'fetchAccounts', () => client.fetchAccounts(itemId, 'CREDIT'))
  const checking = accounts?.results.find(a => a.subtype === 'CHECKING_ACCOUNT')
  const card = accounts?.results.find(a => a.type === 'CREDIT')
  await call('fetchAccount', 'fetchAccount', () => client.fetchAccount(checking.id))
  await call('fetchAccount: card', 'fetchAccount', () => client.fetchAccount(card.id), a => ({
    closeDateIsDate: isDate(a.creditData.balanceCloseDate),
  }))
  await call('fetchAccount: unknown', 'fetchAccount', () => client.fetchAccount(NON_EXISTENT_UUID))
  await call('fetchAccountStatements', 'fetchAccountStatements', () => client.fetchAccountStatements(checking.id))

  // --- transactions ----------------------------------------------------------------------------------
  await call('fetchTransactions: legacy, pageSize 500', 'fetchTransactions', () =>
    client.fetchTransactions(checking.id, { pageSize: 500 })
  )
  await call('fetchTransactions: legacy, page 2 of 20', 'fetchTransactions', () =>
    client.fetchTransactions(checking.id, { page: 2 })
  )
  const firstPage = await call('fetchTransactionsCursor: first page', 'fetchTransactionsCursor', () =>
    client.fetchTransactionsCursor(checking.id)
  )
  await call('fetchAllTransactions: checking', 'fetchAllTransactions', () => client.fetchAllTransactions(checking.id), rowFacts)
  await call('fetchAllTransactions: card', 'fetchAllTransactions', () => client.fetchAllTransactions(card.id), rowFacts)
  await call('fetchAllTransactions: dateFrom', 'fetchAllTransactions', () =>
    client.fetchAllTransactions(checking.id, { dateFrom: config.dateFrom })
  , rowFacts)
  await call('fetchAllTransactions: createdAtFrom', 'fetchAllTransactions', () =>
    client.fetchAllTransactions(checking.id, { createdAtFrom: '2000-01-01T00:00:00.000Z' })
  , rowFacts)
  const someIds = (firstPage?.results ?? []).slice(0, 3).map(t => t.id)
  await call('fetchTransactionsCursor: ids', 'fetchTransactionsCursor', () =>
    client.fetchTransactionsCursor(checking.id, { ids: someIds })
  )
  await call('fetchTransactionsCursor: bad cursor', 'fetchTransactionsCursor', () =>
    client.fetchTransactionsCursor(checking.id, { after: 'not-a-cursor' })
  )
  const tx = firstPage?.results[0]
  await call('fetchTransaction', 'fetchTransaction', () => client.fetchTransaction(tx.id), t => rowFacts([t]))
  await call('fetchTransaction: unknown', 'fetchTransaction', () => client.fetchTransaction(NON_EXISTENT_UUID))

  // --- products: bills, investments, loans, identity, consents ---------------------------------------------
  const dated = (...keys) => value => Object.fromEntries(keys.map(k => [`${k}IsDate`, isDate(value[k])]))
  const datedRows = (...keys) => page =>
    Object.fromEntries(keys.map(k => [`${k}AreDates`, (page.results ?? page).every(row => isDate(row[k]))]))
  const bills = await call('fetchCreditCardBills', 'fetchCreditCardBills', () =>
    client.fetchCreditCardBills(card.id)
  , datedRows('dueDate', 'createdAt'))
  await call('fetchCreditCardBills: checking', 'fetchCreditCardBills', () => client.fetchCreditCardBills(checking.id))
  await call('fetchCreditCardBills: page 2 of 1', 'fetchCreditCardBills', () =>
    client.fetchCreditCardBills(card.id, { page: 2, pageSize: 1 })
  )
  await call('fetchCreditCardBills: no accountId', 'fetchCreditCardBills', () => client.fetchCreditCardBills())
  await call('fetchCreditCardBill', 'fetchCreditCardBill', () => client.fetchCreditCardBill(bills.results[0].id),
    dated('dueDate', 'billClosingDate', 'updatedAt'))
  await call('fetchCreditCardBill: unknown', 'fetchCreditCardBill', () => client.fetchCreditCardBill(NON_EXISTENT_UUID))
  const investments = await call('fetchInvestments', 'fetchInvestments', () => client.fetchInvestments(itemId),
    datedRows('date'))
  const investment = investments?.results[0]
  await call('fetchInvestments: type', 'fetchInvestments', () => client.fetchInvestments(itemId, investment.type))
  await call('fetchInvestments: no itemId', 'fetchInvestments', () => client.fetchInvestments())
  await call('fetchInvestment', 'fetchInvestment', () => client.fetchInvestment(investment.id), dated('date'))
  await call('fetchInvestment: unknown', 'fetchInvestment', () => client.fetchInvestment(NON_EXISTENT_UUID))
  await call('fetchInvestmentTransactions', 'fetchInvestmentTransactions', () =>
    client.fetchInvestmentTransactions(investment.id)
  , datedRows('date', 'tradeDate'))
  await call('fetchAllInvestmentTransactions', 'fetchAllInvestmentTransactions', () =>
    client.fetchAllInvestmentTransactions(investment.id)
  , datedRows('date'))
  await call('fetchInvestmentTransactions: unknown investment', 'fetchInvestmentTransactions', () =>
    client.fetchInvestmentTransactions(NON_EXISTENT_UUID)
  )
  const loans = await call('fetchLoans', 'fetchLoans', () => client.fetchLoans(itemId), datedRows('contractDate'))
  await call('fetchLoan', 'fetchLoan', () => client.fetchLoan(loans.results[0].id), dated('contractDate', 'dueDate'))
  await call('fetchLoan: unknown', 'fetchLoan', () => client.fetchLoan(NON_EXISTENT_UUID))
  const identity = await call('fetchIdentityByItemId', 'fetchIdentityByItemId', () =>
    client.fetchIdentityByItemId(itemId)
  , dated('birthDate', 'createdAt', 'updatedAt'))
  await call('fetchIdentityByItemId: unknown item', 'fetchIdentityByItemId', () =>
    client.fetchIdentityByItemId(NON_EXISTENT_UUID)
  )
  await call('fetchIdentityByItemId: not a UUID', 'fetchIdentityByItemId', () => client.fetchIdentityByItemId('nope'))
  await call('fetchIdentity', 'fetchIdentity', () => client.fetchIdentity(identity.id), dated('createdAt'))
  await call('fetchIdentity: unknown', 'fetchIdentity', () => client.fetchIdentity(NON_EXISTENT_UUID))
  const consents = await call('fetchConsents', 'fetchConsents', () => client.fetchConsents(itemId),
    datedRows('createdAt', 'expiresAt'))
  await call('fetchConsent', 'fetchConsent', () => client.fetchConsent(consents.results[0].id), dated('expiresAt'))
  await call('fetchConsent: unknown', 'fetchConsent', () => client.fetchConsent(NON_EXISTENT_UUID))

  // --- categories --------------------------------------------------------------------------------------
  const categories = await call('fetchCategories', 'fetchCategories', () => client.fetchCategories())
  const sample = categories?.results.find(c => c.parentId)
  await call('fetchCategory', 'fetchCategory', () => client.fetchCategory(sample.id))
  await call('fetchCategory: unknown', 'fetchCategory', () => client.fetchCategory('99999999'))
  const newCategory = categories?.results.find(c => c.parentId && c.id !== tx.categoryId)
  await call('updateTransactionCategory', 'updateTransactionCategory', () =>
    client.updateTransactionCategory(tx.id, newCategory.id)
  )
  await call('fetchTransaction: after recategorizing', 'fetchTransaction', () => client.fetchTransaction(tx.id))
  await call('updateTransactionCategory: unknown transaction', 'updateTransactionCategory', () =>
    client.updateTransactionCategory(NON_EXISTENT_UUID, newCategory.id)
  )

  // --- MFA (sandbox MFA connectors: 1 = token with the login, 2 = token asked after the login) ---------------
  const twoStep = await call('createItem: MFA 2-step', 'createItem', () => client.createItem(2, SANDBOX))
  await call('fetchItem: waiting for MFA', 'fetchItem', () => settle(client, twoStep.id))
  await call('updateItemMFA: sandbox token', 'updateItemMFA', () => client.updateItemMFA(twoStep.id, { token: '123456' }))
  await call('fetchItem: after MFA', 'fetchItem', () => settle(client, twoStep.id))
  await call('updateItemMFA: not waiting', 'updateItemMFA', () => client.updateItemMFA(twoStep.id, { token: '123456' }))
  const wrongMfa = await call('createItem: MFA 2-step, wrong token', 'createItem', () => client.createItem(2, SANDBOX))
  await call('updateItemMFA: wrong token', 'updateItemMFA', () => client.updateItemMFA(wrongMfa.id, { token: '000000' }))
  await call('fetchItem: after wrong MFA', 'fetchItem', () => settle(client, wrongMfa.id))
  await call('createItem: MFA 1-step', 'createItem', async () =>
    settle(client, (await client.createItem(1, { ...SANDBOX, token: '123456' })).id)
  )
  await call('createItem: MFA 1-step, wrong token', 'createItem', async () =>
    settle(client, (await client.createItem(1, { ...SANDBOX, token: '000000' })).id)
  )
  await call('createItem: MFA 1-step, no token', 'createItem', () => client.createItem(1, SANDBOX))

  // --- webhooks ----------------------------------------------------------------------------------------
  const hookUrl = 'https://example.com/pluggy/webhooks/conformance'
  const hook = await call('createWebhook', 'createWebhook', () =>
    client.createWebhook('item/updated', hookUrl, { 'X-Webhook-Secret': 'conformance' })
  , webhookFacts)
  await call('fetchWebhooks', 'fetchWebhooks', () => client.fetchWebhooks())
  await call('fetchWebhook', 'fetchWebhook', () => client.fetchWebhook(hook.id), webhookFacts)
  await call('updateWebhook: url and event', 'updateWebhook', () =>
    client.updateWebhook(hook.id, { url: `${hookUrl}-updated`, event: 'all' })
  )
  await call('updateWebhook: disable', 'updateWebhook', () => client.updateWebhook(hook.id, { enabled: false }), h => ({
    disabledAtIsDate: isDate(h.disabledAt),
  }))
  await call('updateWebhook: enable, clear headers', 'updateWebhook', () =>
    client.updateWebhook(hook.id, { enabled: true, headers: null })
  )
  await call('updateWebhook: bad url', 'updateWebhook', () => client.updateWebhook(hook.id, { url: 'http://example.com/x' }))
  await call('createWebhook: duplicate', 'createWebhook', () => client.createWebhook('all', `${hookUrl}-updated`))
  await call('createWebhook: unknown event', 'createWebhook', () => client.createWebhook('item/exploded', hookUrl))
  const refused = {
    'http scheme': 'http://example.com/hook',
    localhost: 'https://localhost/hook',
    'subdomain of localhost': 'https://api.localhost/hook',
    '.local name': 'https://printer.local/hook',
    '.internal name': 'https://hooks.internal/hook',
    'IPv4 address': 'https://93.184.216.34/hook',
    'IPv6 address': 'https://[2606:2800:220:1:248:1893:25c8:1946]/hook',
    'port 8443': 'https://example.com:8443/hook',
    'user:pass@': 'https://user:pass@example.com/hook',
    'not a URL': 'example.com/hook',
    'loopback receiver': config.loopbackUrl,
  }
  for (const [what, url] of Object.entries(refused)) {
    await call(`createWebhook: refused ${what}`, 'createWebhook', () => client.createWebhook('item/created', url))
  }
  await call('createWebhook: explicit port 443', 'createWebhook', () =>
    client.createWebhook('item/created', 'https://example.com:443/hook')
  )
  await call('createWebhook: a name no DNS resolves', 'createWebhook', () =>
    client.createWebhook('item/created', 'https://no-such-host.pluggy-pipeline-conformance.com/hook')
  )
  const perEvent = []
  for (let n = 0; n < 6; n++) {
    perEvent.push(
      await call(`createWebhook: transactions/deleted #${n + 1}`, 'createWebhook', () =>
        client.createWebhook('transactions/deleted', `https://example.com/pluggy/limit-${n}`)
      )
    )
  }
  await call('deleteWebhook', 'deleteWebhook', () => client.deleteWebhook(hook.id))
  await call('fetchWebhook: deleted', 'fetchWebhook', () => client.fetchWebhook(hook.id))
  await call('deleteWebhook: unknown', 'deleteWebhook', () => client.deleteWebhook(NON_EXISTENT_UUID))

  // --- payments (reads; the resources come from the emulator's control API) ------------------------------
  const { requestId, intentId, scheduleId } = config.payments
  await call('payments.fetchPaymentRequest', 'payments.fetchPaymentRequest', () =>
    client.payments.fetchPaymentRequest(requestId)
  , r => ({ createdAtIsDate: isDate(r.createdAt) }))
  await call('payments.fetchPaymentRequests', 'payments.fetchPaymentRequests', () => client.payments.fetchPaymentRequests())
  await call('payments.fetchPaymentRequest: unknown', 'payments.fetchPaymentRequest', () =>
    client.payments.fetchPaymentRequest(NON_EXISTENT_UUID)
  )
  await call('payments.fetchPaymentIntent', 'payments.fetchPaymentIntent', () => client.payments.fetchPaymentIntent(intentId))
  await call('payments.fetchPaymentIntents: by request', 'payments.fetchPaymentIntents', () =>
    client.payments.fetchPaymentIntents({ paymentRequestId: requestId })
  )
  await call('payments.fetchPaymentIntent: unknown', 'payments.fetchPaymentIntent', () =>
    client.payments.fetchPaymentIntent(NON_EXISTENT_UUID)
  )
  await call('payments.fetchScheduledPayments', 'payments.fetchScheduledPayments', () =>
    client.payments.fetchScheduledPayments(requestId)
  )
  await call('payments.fetchScheduledPayment', 'payments.fetchScheduledPayment', () =>
    client.payments.fetchScheduledPayment(requestId, scheduleId)
  )
  await call('payments.fetchScheduledPayment: unknown', 'payments.fetchScheduledPayment', () =>
    client.payments.fetchScheduledPayment(requestId, NON_EXISTENT_UUID)
  )

  // --- deletion ------------------------------------------------------------------------------------------
  await call('deleteItem', 'deleteItem', () => client.deleteItem(itemId))
  await call('fetchItem: deleted', 'fetchItem', () => client.fetchItem(itemId))
  await call('deleteItem: unknown', 'deleteItem', () => client.deleteItem(NON_EXISTENT_UUID))
}

main()
  .catch(error => records.push({ name: 'script', method: null, ok: false, error: describeRejection(error) }))
  .finally(() => writeFileSync(resultPath, JSON.stringify({ sdkVersion, node: process.version, records }, null, 1)))
