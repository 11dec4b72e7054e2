// The dashboard at `/`: one self-contained page (inline CSS and JS, nothing fetched from
// anywhere but this server). Each event from the stream redraws at once; a 1 s refresh keeps
// lag and LSNs current.

import { DASHBOARD_SCRIPT } from './dashboard-script.js';
import { DASHBOARD_STYLE } from './dashboard-style.js';

export const DASHBOARD_HTML = `<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1">
<title>pgop</title><style>${DASHBOARD_STYLE}</style></head>
<body><header><h1>pgop</h1><span class="sub">PostgreSQL clusters</span><span class="sub" id="updated"></span>
<span id="live"><span class="dot"></span><span id="livetext">connecting</span></span></header>
<main><div class="none">Loading…</div></main>
<script>${DASHBOARD_SCRIPT}</script></body></html>
`;
