// The JSON API client: one function for every call, the token kept in localStorage.

const TOKEN_KEY = "softadastra.token";

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export const session = {
  get token() {
    return localStorage.getItem(TOKEN_KEY);
  },
  save(token) {
    localStorage.setItem(TOKEN_KEY, token);
  },
  clear() {
    localStorage.removeItem(TOKEN_KEY);
  },
};

// Call the API; return the envelope ({data, message, meta}) or throw an ApiError
// carrying the server's error code and message. A 401 on a signed-in request means
// the token expired or was revoked: it is dropped and "signedout" is dispatched.
export async function api(path, { method = "GET", body, query } = {}) {
  const url = new URL(path, window.location.origin);
  for (const [name, value] of Object.entries(query ?? {})) {
    if (value !== undefined && value !== null && value !== "") {
      url.searchParams.set(name, String(value));
    }
  }
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const token = session.token;
  if (token) headers.Authorization = `Bearer ${token}`;

  let response;
  try {
    response = await fetch(url, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch {
    throw new ApiError(
      0,
      "network_error",
      "The server could not be reached; check that it is running and try again.",
    );
  }
  let envelope = null;
  try {
    envelope = await response.json();
  } catch {
    // Not JSON: reported below with the status code.
  }
  if (response.ok && envelope?.success === true) return envelope;

  if (response.status === 401 && token) {
    session.clear();
    window.dispatchEvent(new Event("signedout"));
  }
  throw new ApiError(
    response.status,
    envelope?.error ?? `http_${response.status}`,
    envelope?.message ?? `The server answered ${response.status} ${response.statusText}.`,
  );
}
