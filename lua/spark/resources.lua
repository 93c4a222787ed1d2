--- spark.resources: the messaging resources of the Webex API, as data.
-- Taken from the official OpenAPI spec (shared reference
-- webex-messaging.openapi.json). The client (spark.lua) builds
-- client.<resource>:<operation>() from this table and validates parameters
-- and fields with it; the simulator (spark.mock) serves the same resources.
--
-- A resource: path (the collection), id_name (the id's name in the spec's
-- paths, for messages) and operations. An operation:
--   method, path ("" for the collection, "/{id}" for one item, or another
--   path below the API root), id (true when the operation takes an id),
--   query (allowed query parameters: name -> type), body (allowed fields:
--   name -> type), required (names that must be given), one_of (lists of
--   names of which at least one must be given), list (true: answers
--   {"items": [...]} with pagination).
-- Types: "string", "boolean", "max" (integer 1..1000), "strings" (an array
-- of strings; comma-joined in a query), "array" (any array), "object",
-- or an enum: { "a", "b" }.

local R = {}

local function op(method, path, t)
  t = t or {}
  t.method, t.path = method, path
  t.id = path:find("{id}", 1, true) ~= nil
  return t
end

local ROOM_FIELDS = {
  title = "string", teamId = "string", classificationId = "string", isLocked = "boolean",
  isPublic = "boolean", description = "string", isAnnouncementOnly = "boolean",
}

R.rooms = {
  path = "/rooms",
  operations = {
    list = op("GET", "", { list = true, query = {
      teamId = "string", type = { "direct", "group" }, orgPublicSpaces = "boolean",
      from = "string", to = "string", sortBy = { "id", "lastactivity", "created" },
      max = "max" } }),
    get = op("GET", "/{id}"),
    create = op("POST", "", { body = ROOM_FIELDS, required = { "title" } }),
    update = op("PUT", "/{id}", { body = {
      title = "string", classificationId = "string", teamId = "string", isLocked = "boolean",
      isPublic = "boolean", description = "string", isAnnouncementOnly = "boolean",
      isReadOnly = "boolean" }, required = { "title" } }),
    delete = op("DELETE", "/{id}"),
  },
}

R.messages = {
  path = "/messages",
  operations = {
    list = op("GET", "", { list = true, required = { "roomId" }, query = {
      roomId = "string", parentId = "string", mentionedPeople = "strings",
      before = "string", beforeMessage = "string", max = "max" } }),
    get = op("GET", "/{id}"),
    create = op("POST", "", { body = {
      roomId = "string", parentId = "string", toPersonId = "string", toPersonEmail = "string",
      text = "string", markdown = "string", files = "strings", attachments = "array" },
      one_of = { { "roomId", "toPersonId", "toPersonEmail" },
                 { "text", "markdown", "files", "attachments" } } }),
    update = op("PUT", "/{id}", { body = {
      roomId = "string", text = "string", markdown = "string" },
      required = { "roomId" }, one_of = { { "text", "markdown" } } }),
    delete = op("DELETE", "/{id}"),
  },
}

local PERSON_FIELDS = {
  emails = "strings", phoneNumbers = "array", extension = "string", locationId = "string",
  displayName = "string", firstName = "string", lastName = "string", avatar = "string",
  orgId = "string", roles = "strings", licenses = "strings", department = "string",
  manager = "string", managerId = "string", title = "string", addresses = "array",
  siteUrls = "strings",
}

local PERSON_UPDATE = {}
for k, v in pairs(PERSON_FIELDS) do PERSON_UPDATE[k] = v end
PERSON_UPDATE.nickName = "string"
PERSON_UPDATE.loginEnabled = "boolean"

R.people = {
  path = "/people",
  operations = {
    me = op("GET", "/me", { query = { callingData = "boolean" } }),
    list = op("GET", "", { list = true, query = {
      email = "string", displayName = "string", id = "string", orgId = "string",
      roles = "string", callingData = "boolean", locationId = "string", max = "max",
      excludeStatus = "boolean" } }),
    get = op("GET", "/{id}", { query = { callingData = "boolean" } }),
    create = op("POST", "", { body = PERSON_FIELDS, required = { "emails" },
      query = { callingData = "boolean", minResponse = "boolean" } }),
    update = op("PUT", "/{id}", { body = PERSON_UPDATE, required = { "displayName" },
      query = { callingData = "boolean", showAllTypes = "boolean", minResponse = "boolean" } }),
    delete = op("DELETE", "/{id}"),
  },
}

R.memberships = {
  path = "/memberships",
  operations = {
    list = op("GET", "", { list = true, query = {
      roomId = "string", personId = "string", personEmail = "string", max = "max" } }),
    get = op("GET", "/{id}"),
    create = op("POST", "", { body = {
      roomId = "string", personId = "string", personEmail = "string", isModerator = "boolean" },
      required = { "roomId" }, one_of = { { "personId", "personEmail" } } }),
    update = op("PUT", "/{id}", { body = { isModerator = "boolean", isRoomHidden = "boolean" },
      required = { "isModerator", "isRoomHidden" } }),
    delete = op("DELETE", "/{id}"),
  },
}

R.teams = {
  path = "/teams",
  operations = {
    list = op("GET", "", { list = true, query = { max = "max" } }),
    get = op("GET", "/{id}", { query = { description = "string" } }),
    create = op("POST", "", { body = { name = "string", description = "string" },
      required = { "name" } }),
    update = op("PUT", "/{id}", { body = { name = "string", description = "string" },
      required = { "name" } }),
    delete = op("DELETE", "/{id}"),
  },
}

R.team_memberships = {
  path = "/team/memberships",
  operations = {
    list = op("GET", "", { list = true, required = { "teamId" },
      query = { teamId = "string", max = "max" } }),
    get = op("GET", "/{id}"),
    create = op("POST", "", { body = {
      teamId = "string", personId = "string", personEmail = "string", isModerator = "boolean" },
      required = { "teamId" }, one_of = { { "personId", "personEmail" } } }),
    update = op("PUT", "/{id}", { body = { isModerator = "boolean" },
      required = { "isModerator" } }),
    delete = op("DELETE", "/{id}"),
  },
}

local WEBHOOK_RESOURCES = {
  "attachmentActions", "dataSources", "memberships", "messages", "rooms", "meetings",
  "recordings", "convergedRecordings", "meetingParticipants", "meetingTranscripts",
  "telephony_calls", "telephony_conference", "telephony_mwi", "uc_counters", "serviceApp",
  "adminBatchJobs",
}
local WEBHOOK_EVENTS = {
  "created", "updated", "deleted", "started", "ended", "joined", "left", "migrated",
  "authorized", "deauthorized", "statusChanged",
}

R.webhooks = {
  path = "/webhooks",
  operations = {
    list = op("GET", "", { list = true, query = { max = "max", ownedBy = "string" } }),
    get = op("GET", "/{id}"),
    create = op("POST", "", { body = {
      name = "string", targetUrl = "string", resource = WEBHOOK_RESOURCES,
      event = WEBHOOK_EVENTS, filter = "string", secret = "string", ownedBy = "string" },
      required = { "name", "targetUrl", "resource", "event" } }),
    update = op("PUT", "/{id}", { body = {
      name = "string", targetUrl = "string", secret = "string", ownedBy = "string",
      status = { "active" } }, required = { "name", "targetUrl" } }),
    delete = op("DELETE", "/{id}"),
  },
}

return R
