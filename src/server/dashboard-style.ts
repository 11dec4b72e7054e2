// The dashboard's stylesheet (inlined into the page by dashboard.ts): dark, role colours
// (primary green, standby blue, down red, pgpool violet).

export const DASHBOARD_STYLE = `
:root {
  --bg: #0f1419;
  --panel: #171e26;
  --panel2: #1d2630;
  --line: #2a3541;
  --text: #e6edf3;
  --dim: #8b98a5;
  --primary: #3fb950;
  --standby: #58a6ff;
  --down: #f85149;
  --unknown: #8b949e;
  --warn: #d29922;
  --pool: #bc8cff;
  --mono: ui-monospace, SFMono-Regular, 'DejaVu Sans Mono', Menlo, Consolas, monospace;
}
* {
  box-sizing: border-box;
}
html {
  color-scheme: dark;
}
body {
  margin: 0;
  background: var(--bg);
  color: var(--text);
  font:
    14px/1.45 system-ui,
    -apple-system,
    'Segoe UI',
    'DejaVu Sans',
    Roboto,
    sans-serif;
}
header {
  display: flex;
  align-items: center;
  gap: 14px;
  padding: 14px 28px;
  border-bottom: 1px solid var(--line);
  background: #0b1015;
  position: sticky;
  top: 0;
  z-index: 2;
}
header h1 {
  font-size: 17px;
  margin: 0;
  font-weight: 650;
  letter-spacing: 0.3px;
}
header .sub {
  color: var(--dim);
  font-size: 13px;
}
#live {
  margin-left: auto;
  display: flex;
  align-items: center;
  gap: 7px;
  color: var(--dim);
  font-size: 12.5px;
}
#live .dot {
  width: 9px;
  height: 9px;
  border-radius: 50%;
  background: var(--down);
}
#live.on .dot {
  background: var(--primary);
  box-shadow: 0 0 0 3px #3fb95033;
}
main {
  padding: 22px 28px;
  display: flex;
  flex-direction: column;
  gap: 26px;
  max-width: 1500px;
  margin: 0 auto;
}
.cluster {
  background: var(--panel);
  border: 1px solid var(--line);
  border-radius: 12px;
  overflow: hidden;
}
.chead {
  display: flex;
  flex-wrap: wrap;
  align-items: baseline;
  gap: 10px 18px;
  padding: 14px 20px;
  border-bottom: 1px solid var(--line);
  background: var(--panel2);
}
.chead h2 {
  margin: 0;
  font-size: 18px;
}
.kv {
  color: var(--dim);
  font-size: 13px;
}
.kv b {
  color: var(--text);
  font-weight: 550;
}
.badge {
  display: inline-block;
  padding: 1px 9px;
  border-radius: 999px;
  font-size: 12px;
  font-weight: 600;
  border: 1px solid;
}
.ph-Healthy {
  color: var(--primary);
  border-color: #3fb95066;
  background: #3fb9501a;
}
.ph-FailingOver,
.ph-Degraded {
  color: var(--warn);
  border-color: #d2992266;
  background: #d299221a;
}
.ph-other {
  color: var(--standby);
  border-color: #58a6ff66;
  background: #58a6ff1a;
}
.banner {
  margin: 14px 20px 0;
  padding: 9px 14px;
  border-radius: 8px;
  background: #d299221f;
  border: 1px solid #d2992266;
  color: #f0c560;
  font-weight: 550;
  display: none;
}
.banner.show {
  display: block;
}
.body {
  display: grid;
  grid-template-columns: minmax(0, 1.25fr) minmax(0, 1fr);
  gap: 0;
}
@media (max-width: 1100px) {
  .body {
    grid-template-columns: 1fr;
  }
}
.topo {
  padding: 18px 20px;
  border-right: 1px solid var(--line);
}
.section {
  font-size: 11.5px;
  text-transform: uppercase;
  letter-spacing: 1.1px;
  color: var(--dim);
  margin: 0 0 10px;
}
.pool {
  border: 1px solid #bc8cff55;
  background: #bc8cff12;
  border-radius: 10px;
  padding: 10px 14px;
  margin-bottom: 8px;
  display: flex;
  flex-wrap: wrap;
  gap: 6px 16px;
  align-items: center;
}
.pool .name {
  color: var(--pool);
  font-weight: 650;
}
.pool .bad {
  color: var(--down);
  font-weight: 600;
}
.arrow {
  text-align: center;
  color: var(--dim);
  font-size: 12px;
  margin: 2px 0 8px;
}
.nodes {
  display: grid;
  grid-template-columns: repeat(auto-fill, minmax(210px, 1fr));
  gap: 12px;
}
.node {
  border: 1px solid var(--line);
  border-left: 4px solid var(--unknown);
  border-radius: 10px;
  padding: 11px 13px;
  background: #131a21;
  transition: box-shadow 0.4s;
}
.node.primary {
  border-left-color: var(--primary);
}
.node.standby {
  border-left-color: var(--standby);
}
.node.down {
  border-left-color: var(--down);
  opacity: 0.88;
}
.node.flash {
  box-shadow:
    0 0 0 2px var(--primary),
    0 0 22px #3fb95055;
}
.ntop {
  display: flex;
  align-items: center;
  justify-content: space-between;
  gap: 8px;
}
.nname {
  font-weight: 700;
  font-size: 15.5px;
}
.role {
  font-size: 11.5px;
  font-weight: 700;
  text-transform: uppercase;
  letter-spacing: 0.8px;
  padding: 2px 8px;
  border-radius: 6px;
}
.role.primary {
  background: #3fb95026;
  color: var(--primary);
}
.role.standby {
  background: #58a6ff26;
  color: var(--standby);
}
.role.down {
  background: #f8514926;
  color: var(--down);
}
.role.unknown {
  background: #8b949e26;
  color: var(--unknown);
}
.meta {
  display: grid;
  grid-template-columns: auto 1fr;
  gap: 2px 10px;
  margin-top: 8px;
  font-size: 12.5px;
}
.meta dt {
  color: var(--dim);
}
.meta dd {
  margin: 0;
  font-family: var(--mono);
  font-size: 12px;
  overflow-wrap: anywhere;
}
.lagbar {
  height: 5px;
  border-radius: 3px;
  background: #26313c;
  margin-top: 8px;
  overflow: hidden;
}
.lagbar i {
  display: block;
  height: 100%;
  background: var(--standby);
}
.chip {
  white-space: nowrap;
  font-size: 11px;
  padding: 0 6px;
  border-radius: 5px;
  border: 1px solid var(--line);
  color: var(--dim);
  margin-left: 4px;
}
.chip.sync,
.chip.quorum {
  color: var(--primary);
  border-color: #3fb95066;
}
.msg {
  margin-top: 7px;
  font-size: 12px;
  color: var(--dim);
  overflow-wrap: anywhere;
}
.node.down .msg {
  color: #ff9b94;
}
.story {
  padding: 18px 20px;
  display: flex;
  flex-direction: column;
  min-width: 0;
}
.events {
  list-style: none;
  margin: 0;
  padding: 0;
  max-height: 440px;
  overflow: auto;
  border: 1px solid var(--line);
  border-radius: 10px;
  background: #121920;
}
.events li {
  display: grid;
  grid-template-columns: 78px 58px minmax(0, 1fr);
  gap: 2px 10px;
  padding: 7px 12px;
  border-bottom: 1px solid #222c36;
  font-size: 12.5px;
}
.events li:last-child {
  border-bottom: 0;
}
.events li.new {
  animation: hl 2.5s ease-out;
}
@keyframes hl {
  from {
    background: #d2992233;
  }
  to {
    background: transparent;
  }
}
.events .t {
  color: var(--dim);
  font-family: var(--mono);
  font-size: 11.5px;
}
.events .n {
  font-weight: 600;
}
.events .rule {
  font-family: var(--mono);
  font-size: 11.5px;
  color: var(--pool);
}
.events .rule.failover {
  color: var(--warn);
}
.events .rule.failed {
  color: var(--down);
}
.events .tr {
  color: var(--dim);
  font-family: var(--mono);
  font-size: 11.5px;
  margin-left: 8px;
}
.events .reason {
  grid-column: 3;
  color: #c9d4de;
}
.jobs {
  margin-top: 16px;
}
.empty {
  color: var(--dim);
  font-size: 13px;
  padding: 6px 0;
}
.none {
  color: var(--dim);
  padding: 40px;
  text-align: center;
}
.err {
  color: var(--down);
  font-size: 13px;
}
`;
