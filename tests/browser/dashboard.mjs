// Loads the admin port's dashboard (GET /) in Chromium through playwright-core and prints,
// as one JSON object on stdout, what the page shows: every [data-figure] element's text,
// the banner, the layout, every request the page made, and any JS error or console error.
// Driven by tests/e2e/test_dashboard.py; also usable by hand:
//
//   node dashboard.mjs --url 'http://127.0.0.1:8439/' --viewport 390x844 --mobile \
//        --screenshot output/phone.png --wait ok
//
// Options:
//   --url URL            the page (may carry ?token=T or #token=T)
//   --viewport WxH       default 1280x900
//   --mobile             phone emulation (isMobile, hasTouch, device scale 3)
//   --wait ok|error|load ok: the page refreshed without error at least --polls times;
//                        error: the error banner is visible; load: just the response
//   --polls N            with --wait ok, polls to wait for (default 2: rates need two)
//   --set-token T        after the page is up, type T into the token field and submit
//                        (an empty T presses "forget" instead), then wait as --wait says
//   --screenshot PATH    full-page PNG
//   --timeout MS         for each wait (default 15000)
//   --chromium PATH      default /usr/bin/chromium
import { chromium } from 'playwright-core';

function parseArgs(argv) {
	const o = { viewport: '1280x900', wait: 'ok', polls: 2, timeout: 15000, chromium: '/usr/bin/chromium' };
	for (let i = 0; i < argv.length; i++) {
		const a = argv[i];
		const next = () => {
			if (i + 1 >= argv.length) throw new Error(`${a} needs a value`);
			return argv[++i];
		};
		switch (a) {
		case '--url': o.url = next(); break;
		case '--viewport': o.viewport = next(); break;
		case '--mobile': o.mobile = true; break;
		case '--wait': o.wait = next(); break;
		case '--polls': o.polls = Number(next()); break;
		case '--set-token': o.setToken = next(); break;
		case '--screenshot': o.screenshot = next(); break;
		case '--timeout': o.timeout = Number(next()); break;
		case '--chromium': o.chromium = next(); break;
		default: throw new Error(`unknown option ${a}`);
		}
	}
	if (!o.url) throw new Error('--url is required');
	const m = /^(\d+)x(\d+)$/.exec(o.viewport);
	if (!m) throw new Error(`--viewport wants WxH, got ${o.viewport}`);
	o.width = Number(m[1]);
	o.height = Number(m[2]);
	return o;
}

async function waitFor(page, o, startPolls) {
	if (o.wait === 'ok') {
		// at least o.polls refreshes after startPolls, the last one without error
		await page.waitForFunction(
		    ([n, start]) => Number(document.body.dataset.polls) >= start + n &&
		        document.body.dataset.state === 'ok',
		    [o.polls, startPolls], { timeout: o.timeout, polling: 100 });
	} else if (o.wait === 'error') {
		await page.waitForFunction(
		    (start) => Number(document.body.dataset.polls) > start &&
		        document.body.dataset.state === 'error' && !document.getElementById('banner').hidden,
		    startPolls, { timeout: o.timeout, polling: 100 });
	}
}

async function main() {
	const o = parseArgs(process.argv.slice(2));
	const out = { url: o.url, viewport: { width: o.width, height: o.height, mobile: !!o.mobile },
		requests: [], consoleErrors: [], pageErrors: [], failedRequests: [] };
	const browser = await chromium.launch({
		executablePath: o.chromium, headless: true,
		// root in a container has no user namespace sandbox; the page is our own
		args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-dev-shm-usage'],
	});
	try {
		const context = await browser.newContext({
			viewport: { width: o.width, height: o.height },
			isMobile: !!o.mobile, hasTouch: !!o.mobile, deviceScaleFactor: o.mobile ? 3 : 1,
		});
		const page = await context.newPage();
		page.on('request', (r) => out.requests.push({ method: r.method(), url: r.url() }));
		page.on('requestfailed', (r) => out.failedRequests.push({ url: r.url(), error: r.failure()?.errorText }));
		page.on('console', (m) => {
			if (m.type() === 'error') out.consoleErrors.push(m.text());
		});
		page.on('pageerror', (e) => out.pageErrors.push(String(e && e.stack || e)));

		const resp = await page.goto(o.url, { waitUntil: 'load', timeout: o.timeout });
		out.status = resp ? resp.status() : null;
		out.contentType = resp ? resp.headers()['content-type'] || null : null;
		out.csp = resp ? resp.headers()['content-security-policy'] || null : null;
		if (o.wait === 'load' || !out.contentType || !out.contentType.startsWith('text/html')) {
			out.bodyText = await page.evaluate(() => document.body ? document.body.innerText : '');
		} else {
			await waitFor(page, { ...o, wait: o.setToken !== undefined ? 'ok' : o.wait }, 0);
			if (o.setToken !== undefined) {
				const start = Number(await page.evaluate(() => document.body.dataset.polls));
				if (o.setToken === '') {
					await page.click('#token-forget');
				} else {
					await page.fill('#token', o.setToken);
					await page.click('#token-save');
				}
				await waitFor(page, o, start);
			}
			Object.assign(out, await page.evaluate(() => {
				const figures = {};
				document.querySelectorAll('[data-figure]').forEach((e) => {
					figures[e.dataset.figure] = e.textContent.trim();
				});
				const banner = document.getElementById('banner');
				const rect = (id) => {
					const r = document.getElementById(id).getBoundingClientRect();
					return { x: Math.round(r.x), y: Math.round(r.y), width: Math.round(r.width) };
				};
				const scrollers = [...document.querySelectorAll('.scroll')].map((d) => ({
					table: d.firstElementChild ? d.firstElementChild.id : null,
					clientWidth: d.clientWidth, scrollWidth: d.scrollWidth,
					overflowX: getComputedStyle(d).overflowX,
				}));
				return {
					figures,
					state: document.body.dataset.state,
					polls: Number(document.body.dataset.polls),
					banner: { visible: !banner.hidden, text: banner.textContent, status: banner.dataset.status || null },
					workerRows: [...document.querySelectorAll('#workers tr[data-worker]')].map((r) => r.dataset.worker),
					eventRows: document.querySelectorAll('#events tr').length,
					chartLines: document.querySelectorAll('#chart polyline').length,
					tokenField: document.getElementById('token').value,
					location: location.href,
					storedToken: sessionStorage.getItem('qagw.admin_token'),
					layout: {
						innerWidth: window.innerWidth,
						docScrollWidth: document.documentElement.scrollWidth,
						sections: Object.fromEntries(['sec-workers', 'sec-push', 'sec-chart', 'sec-offprimary', 'sec-events']
							.map((id) => [id, rect(id)])),
						scrollers,
					},
				};
			}));
		}
		if (o.screenshot) {
			await page.screenshot({ path: o.screenshot, fullPage: true });
			out.screenshot = o.screenshot;
		}
		await context.close();
	} finally {
		await browser.close();
	}
	process.stdout.write(JSON.stringify(out) + '\n');
}

main().catch((e) => {
	process.stderr.write(`dashboard.mjs: ${e && e.stack || e}\n`);
	process.exit(1);
});
