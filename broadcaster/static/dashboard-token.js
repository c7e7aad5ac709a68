// Where the dashboard's access token comes from (a service with --auth-mode jwt). A module of
// its own, without the page's DOM code, so Node's test runner can import it
// (tests/js/dashboard-token.test.mjs).
//
// A token is handed to the page in the URL's fragment, `/#token=<jwt>`: browsers never send
// the fragment to the server, so it stays out of access logs and Referer headers. The page
// takes it out of the address bar at once (history.replaceState: no reload, no history entry)
// and keeps it in sessionStorage, so a reload of this tab still has it and other tabs and
// later sessions do not. Without one in the fragment, the stored one is used; the page asks
// for one (a form) when the service refuses the connection with 4001.

/** The sessionStorage key of the token. */
export const TOKEN_KEY = "broadcaster.token";

/**
 * The page's token: from the fragment (which is then removed from the address bar and the
 * token stored), else from storage, else null.
 * @param {{hash: string, pathname: string, search: string}} location e.g. window.location
 * @param {{replaceState: Function, state: any}} history e.g. window.history
 * @param {Storage | null} storage e.g. window.sessionStorage (null when it is unavailable)
 */
export function takeToken(location, history, storage) {
  return takeFragmentToken(location, history, storage) ?? readStored(storage);
}

/**
 * A token given in the fragment, or null: removed from the address bar, and stored. Also for
 * a `hashchange` (a new `#token=` pasted into the same tab does not reload the page).
 */
export function takeFragmentToken(location, history, storage) {
  const fragment = new URLSearchParams(location.hash.replace(/^#/, ""));
  const given = fragment.get("token");
  if (given === null) return null;
  fragment.delete("token");
  const rest = fragment.toString();
  const url = `${location.pathname}${location.search}${rest ? `#${rest}` : ""}`;
  history.replaceState(history.state, "", url);
  const token = given.trim();
  if (!token) return null;
  storeToken(storage, token);
  return token;
}

/** Keep `token` for reloads of this tab; null forgets it. */
export function storeToken(storage, token) {
  try {
    if (token === null) storage?.removeItem(TOKEN_KEY);
    else storage?.setItem(TOKEN_KEY, token);
  } catch {
    // storage full or refused (private mode): the token lives as long as the page
  }
}

function readStored(storage) {
  try {
    const stored = storage?.getItem(TOKEN_KEY);
    return stored ? stored : null;
  } catch {
    return null;
  }
}
