// The console's shell: hash routing between the pages, the header, sign-in and sign-out.
// Each page module exports mount(root, params) and returns a function that stops its
// timers and requests when the user leaves the page.

import { adminToken, askForToken, onTokenNeeded, setAdminToken, signOut } from './api.js';
import { promptToken } from './dialogs.js';
import { h } from './dom.js';
import * as overview from './overview.js';
import * as endpoint from './endpoint.js';
import * as playground from './playground.js';

const ROUTES = [
  { pattern: /^\/$/, page: overview, nav: 'overview', title: 'Endpoints' },
  { pattern: /^\/endpoints\/([^/]+)$/, page: endpoint, nav: 'overview', title: 'Endpoint' },
  { pattern: /^\/playground$/, page: playground, nav: 'playground', title: 'Playground' },
];

const main = document.getElementById('main');
let unmount = null;

/** "#/endpoints/chat?tab=logs" → { path: "/endpoints/chat", query: URLSearchParams }. */
function parseHash() {
  const raw = location.hash.replace(/^#/, '') || '/';
  const [path, search = ''] = raw.split('?');
  return { path: path || '/', query: new URLSearchParams(search) };
}

function route() {
  if (unmount) unmount();
  unmount = null;
  const { path, query } = parseHash();
  main.replaceChildren();
  const match = ROUTES.map((r) => ({ r, m: path.match(r.pattern) })).find((x) => x.m);
  for (const link of document.querySelectorAll('[data-nav]')) {
    if (match && link.dataset.nav === match.r.nav) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  if (!match) {
    document.title = 'Not found · Portico';
    main.append(h('section', { class: 'page' },
      h('h1', { text: 'Page not found' }),
      h('p', {}, 'Nothing lives at ', h('code', { text: location.hash }), '. ',
        h('a', { href: '#/' }, 'Back to the endpoints'), '.')));
    return;
  }
  const params = { query, id: match.m[1] ? decodeURIComponent(match.m[1]) : undefined };
  document.title = `${params.id || match.r.title} · Portico`;
  unmount = match.r.page.mount(main, params) || null;
}

function updateSignOut() {
  document.getElementById('sign-out').hidden = !adminToken();
}

onTokenNeeded(async (refused) => {
  const token = await promptToken(refused);
  setAdminToken(token);
});

document.getElementById('sign-out').addEventListener('click', () => {
  signOut();
  // The pages keep polling: their next call asks for a token. Ask now so the user sees why.
  askForToken();
});

// The skip link must not change the hash (that would be a route).
document.querySelector('.skip-link').addEventListener('click', (event) => {
  event.preventDefault();
  main.focus();
});

document.addEventListener('portico:token', updateSignOut);
window.addEventListener('hashchange', route);
updateSignOut();
route();
