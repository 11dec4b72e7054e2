// pgop serve's HTTP side against the real lab, through a failover (kill -9 of the primary):
// /metrics scraped throughout and checked by promtool; a real Prometheus server on the hub's
// loopback scraping pgop, asked for the new primary's role; headless Chromium on the dashboard,
// which must show the new primary and the failover events within 2 s of the promotion, without
// a reload (screenshots before and after in test-results/). Root only, inside the hub
// (scripts/test-integration.sh); Debian packages prometheus and chromium (scripts/bootstrap.sh).

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import CDP from 'chrome-remote-interface';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ChaosLab, REPO } from '../helpers/chaos-lab.js';
import { eventually } from '../helpers/eventually.js';

const root = process.getuid?.() === 0 && !!process.env.PGOP_LAB_PREFIX && !!process.env.PGOP_LAB_STATE;
const PGOP_HTTP = 'http://127.0.0.1:9187';
const PROM_PORT = 9090;
const RESULTS = join(REPO, 'test-results');

async function text(url: string): Promise<string> {
  const r = await fetch(url, { signal: AbortSignal.timeout(3000) });
  if (!r.ok) throw new Error(`${url}: ${r.status}`);
  return r.text();
}

/** A child process that prints a line we wait for (or exits: then its output is the error). */
function startChild(
  cmd: string,
  args: string[],
  ready: RegExp,
  timeoutMs: number,
): Promise<{ child: ChildProcess; match: RegExpExecArray }> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    const onData = (d: Buffer) => {
      out += d.toString();
      const m = ready.exec(out);
      if (m) resolve({ child, match: m });
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
    child.on('exit', (code) => reject(new Error(`${cmd} exited (${code}): ${out.slice(-2000)}`)));
    setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${cmd} not ready in ${timeoutMs} ms: ${out.slice(-2000)}`));
    }, timeoutMs).unref();
  });
}

function stopChild(c: ChildProcess | null): void {
  if (c && c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
}

describe.skipIf(!root)('HTTP API, metrics and dashboard on the lab (root)', { timeout: 170_000 }, () => {
  const lab = root
    ? new ChaosLab({ name: 'web', network: '10.88.0.0/24', mode: 'sync' })
    : (null as unknown as ChaosLab);
  const tmp = root ? mkdtempSync(join(process.env.PGOP_LAB_STATE!, 'server-test-')) : '';
  let prometheus: ChildProcess | null = null;
  let chromium: ChildProcess | null = null;
  let page: CDP.Client | null = null;

  const evaluate = async <T>(expression: string): Promise<T> => {
    const r = await page!.Runtime.evaluate({ expression, returnByValue: true });
    return r.result.value as T;
  };
  const screenshot = async (name: string) => {
    const { data } = await page!.Page.captureScreenshot({ format: 'png' });
    mkdirSync(RESULTS, { recursive: true });
    writeFileSync(join(RESULTS, name), Buffer.from(data, 'base64'));
  };
  const cardRoles = "[...c.querySelectorAll('.node')].map((n) => [n.dataset.node, n.dataset.role])";
  /** What the page shows of the cluster: its primary, each node card's role, the event rules. */
  const shown = () =>
    evaluate<{ primary: string | null; cards: Record<string, string>; rules: string[] }>(
      `(() => {
    const c = document.querySelector('section[data-cluster="web"]');
    if (!c) return { primary: null, cards: {}, rules: [] };
    return {
      primary: c.dataset.primary,
      cards: Object.fromEntries(${cardRoles}),
      rules: [...c.querySelectorAll('.events li')].map((l) => l.dataset.rule),
    };
  })()`,
    );

  beforeAll(async () => {
    expect(
      existsSync('/usr/bin/promtool') && existsSync('/usr/bin/prometheus'),
      'Debian package prometheus (scripts/bootstrap.sh)',
    ).toBe(true);
    expect(existsSync('/usr/bin/chromium'), 'Debian package chromium (scripts/bootstrap.sh)').toBe(true);
    await lab.up(150_000);
    await eventually(
      async () => expect(JSON.parse(await text(`${PGOP_HTTP}/readyz`)).ready).toBe(true),
      10_000,
    );

    writeFileSync(
      join(tmp, 'prometheus.yml'),
      [
        'global: {scrape_interval: 1s, scrape_timeout: 900ms}',
        'scrape_configs:',
        "  - {job_name: pgop, static_configs: [{targets: ['127.0.0.1:9187']}]}",
        '',
      ].join('\n'),
    );
    prometheus = spawn(
      '/usr/bin/prometheus',
      [
        `--config.file=${join(tmp, 'prometheus.yml')}`,
        `--storage.tsdb.path=${join(tmp, 'tsdb')}`,
        `--web.listen-address=127.0.0.1:${PROM_PORT}`,
        '--log.level=warn',
      ],
      { stdio: ['ignore', 'ignore', 'inherit'] },
    );
    await eventually(
      async () => expect(await text(`http://127.0.0.1:${PROM_PORT}/-/ready`)).toMatch(/Ready/),
      20_000,
    );

    const started = await startChild(
      '/usr/bin/chromium',
      [
        '--headless=new',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-dev-shm-usage',
        '--no-first-run',
        '--hide-scrollbars',
        '--remote-debugging-address=127.0.0.1',
        '--remote-debugging-port=0',
        `--user-data-dir=${join(tmp, 'chromium')}`,
        '--window-size=1400,1000',
        'about:blank',
      ],
      /DevTools listening on ws:\/\/127\.0\.0\.1:(\d+)\//,
      30_000,
    );
    chromium = started.child;
    const port = Number(started.match[1]);
    const target = (await CDP.List({ port })).find((t) => t.type === 'page')!;
    page = await CDP({ port, target });
    await page.Page.enable();
    await page.Runtime.enable();
    await page.Emulation.setDeviceMetricsOverride({
      width: 1400,
      height: 1000,
      deviceScaleFactor: 1,
      mobile: false,
    });
    await page.Page.navigate({ url: `${PGOP_HTTP}/` });
    await eventually(
      async () => {
        const s = await shown();
        expect(s.primary).toBe('pg1');
        expect(s.cards).toEqual({ pg1: 'primary', pg2: 'standby', pg3: 'standby' });
      },
      15_000,
      { stepMs: 100 },
    );
    await screenshot('dashboard-before.png');
  }, 170_000);

  afterAll(async () => {
    await page?.close().catch(() => {});
    stopChild(chromium);
    stopChild(prometheus);
    await lab.down();
    rmSync(tmp, { recursive: true, force: true });
  }, 120_000);

  it('follows a failover: promtool-valid scrapes, Prometheus and the page see the new primary', async () => {
    const scrapes: string[] = [];
    let scraping = true;
    const scraper = (async () => {
      while (scraping) {
        scrapes.push(
          await text(`${PGOP_HTTP}/metrics`).catch((err: Error) => `# scrape failed: ${err.message}`),
        );
        await new Promise((r) => setTimeout(r, 100));
      }
    })();
    // the page's view, polled from here; the moment it first shows the new primary and the events
    let pageShowedAt = 0;
    let pageView: Awaited<ReturnType<typeof shown>> | null = null;
    const after = lab.lastEventId();
    await lab.fault('pg1', 'kill');
    await eventually(
      async () => {
        pageView = await shown();
        expect(pageView.primary).not.toBe('pg1');
        expect(pageView.cards[pageView.primary!]).toBe('primary');
        expect(pageView.rules).toContain('failover.promote');
        expect(pageView.rules).toContain('failover.fence-primary');
        pageShowedAt = Date.now();
      },
      45_000,
      { stepMs: 50 },
    );
    await screenshot('dashboard-after.png');
    const promoted = lab.events(after).find((e) => e.ruleId === 'failover.promote');
    expect(promoted, 'a failover.promote event').toBeDefined();
    const newPrimary = promoted!.node!;
    expect(pageView!.primary).toBe(newPrimary);
    // the page caught up within 2 s of the promotion's commit (no reload: same document)
    expect(pageShowedAt - promoted!.time).toBeLessThanOrEqual(2000);
    expect(await evaluate<number>('performance.getEntriesByType("navigation").length')).toBe(1);

    // metrics: counted, and every scrape taken around the failover passes promtool
    await eventually(
      async () =>
        expect(await text(`${PGOP_HTTP}/metrics`)).toMatch(/^pgop_failovers_total\{cluster="web"\} 1$/m),
      10_000,
    );
    scraping = false;
    await scraper;
    expect(scrapes.length).toBeGreaterThanOrEqual(3);
    for (const body of scrapes) {
      const r = spawnSync('/usr/bin/promtool', ['check', 'metrics'], { input: body, encoding: 'utf8' });
      expect(r.status, `${r.stdout}${r.stderr}\n${body.slice(0, 500)}`).toBe(0);
    }
    expect(
      scrapes.some((b) =>
        new RegExp(`^pgop_node_role\\{cluster="web",node="${newPrimary}",role="primary"\\} 1$`, 'm').test(b),
      ),
    ).toBe(true);

    // a real Prometheus server scraping pgop names the new primary
    await eventually(
      async () => {
        const q = encodeURIComponent('pgop_node_role{cluster="web",role="primary"} == 1');
        const r = JSON.parse(await text(`http://127.0.0.1:${PROM_PORT}/api/v1/query?query=${q}`)) as {
          status: string;
          data: { result: { metric: Record<string, string> }[] };
        };
        expect(r.status).toBe('success');
        expect(r.data.result.map((s) => s.metric.node)).toEqual([newPrimary]);
      },
      20_000,
      { stepMs: 500 },
    );
  });
});
