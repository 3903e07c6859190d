// A tiny edge function for the local stack's functions-host test: echoes the request and calls the
// Data API through SUPABASE_URL, the way real functions reach the project.
Deno.serve(async (req: Request): Promise<Response> => {
  const url = new URL(req.url);
  const body = req.method === "POST" ? await req.json().catch(() => null) : null;
  const base = Deno.env.get("SUPABASE_URL") ?? "";
  const anon = Deno.env.get("SUPABASE_ANON_KEY") ?? "";
  const project = url.searchParams.get("project");
  let topic: unknown = null;
  if (project) {
    const response = await fetch(`${base}/rest/v1/rpc/topic`, {
      method: "POST",
      headers: { apikey: anon, "content-type": "application/json", "content-profile": "metrics" },
      body: JSON.stringify({ p_project_id: project }),
    });
    topic = await response.json();
  }
  return Response.json(
    {
      path: url.pathname,
      method: req.method,
      body,
      topic,
      authorization: req.headers.get("authorization") !== null,
      env: {
        url: base !== "",
        anon: anon !== "",
        service: (Deno.env.get("SUPABASE_SERVICE_ROLE_KEY") ?? "") !== "",
        db: (Deno.env.get("SUPABASE_DB_URL") ?? "") !== "",
      },
    },
    { status: url.searchParams.get("status") ? Number(url.searchParams.get("status")) : 200 },
  );
});
