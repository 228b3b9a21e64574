/* GET /: the dashboard, one self-contained HTML page (no outside assets)
 * that polls /api/workers and /api/push every 2 s and shows the workers,
 * the push figures and the agents recently found off their primary.
 *
 * Off-primary agents: the pool keeps no list of them yet, so the page shows
 * the agents whose pushes were suppressed_off_primary among the last 100
 * push events, and says so. With [admin] token set, open the page as
 * /?token=TOKEN: the page sends that token as a Bearer header on its API
 * calls (docs/admin.md). Everything from the API goes into the page as
 * text nodes, never as HTML. */
#include "admin/api.h"
#include "admin/http.h"

#include <string.h>

static const char page[] =
    "<!DOCTYPE html>\n"
    "<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
    "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
    "<title>qagw</title>\n"
    "<style>\n"
    "body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222;background:#fafafa}\n"
    "h1{font-size:1.3em;margin:0 0 .2em}h2{font-size:1.05em;margin:1.4em 0 .4em}\n"
    "table{border-collapse:collapse;background:#fff}\n"
    "th,td{border:1px solid #ddd;padding:.25em .6em;text-align:right}\n"
    "th{background:#f0f0f0}td.l,th.l{text-align:left}\n"
    ".serving{color:#176d1a}.draining{color:#a36500}.down{color:#b00020;font-weight:bold}\n"
    ".note{color:#666;font-size:.9em;max-width:60em}#status{color:#666}\n"
    "#status.err{color:#b00020}\n"
    "</style></head><body>\n"
    "<h1>qagw pool</h1><div id=\"status\">loading&hellip;</div>\n"
    "<h2>Workers</h2><table id=\"workers\"></table>\n"
    "<h2>Push</h2><table id=\"push\"></table>\n"
    "<p class=\"note\" id=\"pushnote\"></p>\n"
    "<h2>Agents off their primary</h2><table id=\"offprimary\"></table>\n"
    "<p class=\"note\">Agents whose pushes were suppressed because their session is not on "
    "their primary, among the last 100 push events of the pool. An agent off its primary "
    "that has had no push recently is not listed; GET /api/agents/ID shows any one agent."
    "</p>\n"
    "<h2>Recent push events</h2><table id=\"events\"></table>\n"
    "<script>\n"
    "'use strict';\n"
    "const token = new URLSearchParams(location.search).get('token');\n"
    "const hdrs = token ? {Authorization: 'Bearer ' + token} : {};\n"
    "const RESULTS = ['routed','coalesced','sent','acked','suppressed_off_primary',"
    "'no_session','failed'];\n"
    "function cell(tag, text, cls) {\n"
    "  const c = document.createElement(tag);\n"
    "  c.textContent = text === null || text === undefined ? '\\u2013' : String(text);\n"
    "  if (cls) c.className = cls;\n"
    "  return c;\n"
    "}\n"
    "function fill(id, head, rows) {\n"
    "  const t = document.getElementById(id);\n"
    "  t.replaceChildren();\n"
    "  const hr = document.createElement('tr');\n"
    "  head.forEach((h, i) => hr.appendChild(cell('th', h, i === 0 ? 'l' : '')));\n"
    "  t.appendChild(hr);\n"
    "  rows.forEach(r => {\n"
    "    const tr = document.createElement('tr');\n"
    "    r.forEach(c => tr.appendChild(Array.isArray(c) ? cell('td', c[0], c[1]) : "
    "cell('td', c)));\n"
    "    t.appendChild(tr);\n"
    "  });\n"
    "}\n"
    "async function get(path) {\n"
    "  const r = await fetch(path, {headers: hdrs, cache: 'no-store'});\n"
    "  if (!r.ok) throw new Error(path + ': HTTP ' + r.status);\n"
    "  return r.json();\n"
    "}\n"
    "function lat(s) { const l = s.latency_ms || {}; return [l.p50, l.p90, l.p99, l.max]; }\n"
    "async function refresh() {\n"
    "  const st = document.getElementById('status');\n"
    "  try {\n"
    "    const [workers, push] = await Promise.all([get('/api/workers'), get('/api/push')]);\n"
    "    fill('workers', ['worker','node','address','state','sessions','primaries','load',"
    "'source'],\n"
    "      workers.map(w => [[w.name,'l'], [w.node,'l'], [w.address,'l'], [w.state,'l ' + "
    "w.state],\n"
    "        w.sessions, w.primaries, w.load, [w.source,'l']]));\n"
    "    const rows = [[['pool','l'], ...RESULTS.map(k => push.totals[k]), "
    "...lat(push.totals)]];\n"
    "    Object.keys(push.workers).sort().forEach(n => {\n"
    "      const s = push.workers[n];\n"
    "      rows.push([[n,'l'], ...RESULTS.map(k => s[k]), ...lat(s)]);\n"
    "    });\n"
    "    fill('push', ['', ...RESULTS, 'p50 ms', 'p90 ms', 'p99 ms', 'max ms'], rows);\n"
    "    document.getElementById('pushnote').textContent = push.source === 'local' ?\n"
    "      'Redis is unavailable: these are this node\\'s workers only, without latencies or "
    "events.' : '';\n"
    "    const off = new Map();\n"
    "    push.events.forEach(e => { if (e.result === 'suppressed_off_primary' && "
    "!off.has(e.agent)) off.set(e.agent, e); });\n"
    "    fill('offprimary', ['agent','worker','last suppressed'],\n"
    "      [...off.values()].map(e => [[e.agent,'l'], [e.worker,'l'], "
    "[new Date(e.ts_ms).toISOString(),'l']]));\n"
    "    fill('events', ['time','agent','worker','result','latency ms'],\n"
    "      push.events.slice(0, 30).map(e => [[new Date(e.ts_ms).toISOString(),'l'], "
    "[e.agent,'l'],\n"
    "        [e.worker,'l'], [e.result,'l'], e.latency_ms]));\n"
    "    st.className = '';\n"
    "    st.textContent = 'updated ' + new Date().toLocaleTimeString() + ' (every 2 s)';\n"
    "  } catch (err) {\n"
    "    st.className = 'err';\n"
    "    st.textContent = 'refresh failed: ' + err.message + ' (retrying every 2 s)';\n"
    "  }\n"
    "}\n"
    "refresh();\n"
    "setInterval(refresh, 2000);\n"
    "</script></body></html>\n";

void adm_get_dashboard(struct adm_req *r)
{
	/* The token may be in the page's URL: keep it out of Referer headers. */
	adm_add_header(r, "Referrer-Policy", "no-referrer");
	adm_add_header(r, "Content-Security-Policy",
	               "default-src 'none'; script-src 'unsafe-inline'; style-src "
	               "'unsafe-inline'; connect-src 'self'");
	adm_reply_raw(r, 200, "text/html; charset=utf-8", page, sizeof(page) - 1);
}
