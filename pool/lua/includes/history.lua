--[[ append_history(job, entry): append one attempt's entry (a JSON object) to the job's
  'history' (a JSON array) and keep only the last HISTORY_MAX, so that a job retried from the
  dead set again and again keeps a record of bounded size. Used by ack.lua.
  <job> fields: 'history' the array; 'history_count' how many entries it holds (a record of an
  earlier version has none: its entries are counted once, here); 'history_dropped' how many of
  the oldest were dropped, so count + dropped is every attempt ever recorded.
  Cost: the scan of the entries dropped (one per call once the history is full), not of the
  whole history. Rejected: cjson.decode/encode of the array, which rewrites every entry (14
  significant digits for numbers, '\/' for '/') and costs the whole history per call. ]]
local HISTORY_MAX = 20

-- The index of the quote that closes the JSON string opened at 'open'.
local function string_end(json, open)
  local at = open + 1
  while true do
    local found = string.find(json, '["\\]', at)
    if not found then
      return #json
    end
    if string.byte(json, found) == 34 then
      return found
    end
    at = found + 2  -- a backslash: the character it escapes is not a closing quote
  end
end

-- The index of the brace (or bracket) that closes the JSON object (or array) opened at 'from'.
local function value_end(json, from)
  local depth, at = 0, from
  while true do
    local found = string.find(json, '[{}%[%]"]', at)
    if not found then
      return #json
    end
    local byte = string.byte(json, found)
    if byte == 34 then
      at = string_end(json, found) + 1
    else
      depth = depth + ((byte == 123 or byte == 91) and 1 or -1)
      if depth == 0 then
        return found
      end
      at = found + 1
    end
  end
end

-- The entries of a history array, counted (for a record written before 'history_count').
local function count_entries(json)
  local count, at = 0, 2
  while true do
    local first = string.find(json, '[{%[]', at)
    if not first then
      return count
    end
    count, at = count + 1, value_end(json, first) + 1
  end
end

-- The array without its first (oldest) entry.
local function drop_first(json)
  local first = string.find(json, '[{%[]', 2)
  local comma = first and string.find(json, ',', value_end(json, first) + 1, true)
  return comma and ('[' .. string.sub(json, comma + 1)) or '[]'
end

local function append_history(job, entry)
  local fields = redis.call('HMGET', job, 'history', 'history_count')
  local history, count = fields[1], tonumber(fields[2])
  if history and history ~= '[]' then
    count = count or count_entries(history)
    history = string.sub(history, 1, -2) .. ',' .. entry .. ']'
  else
    history, count = '[' .. entry .. ']', 0
  end
  count = count + 1
  local dropped = 0
  while count > HISTORY_MAX do
    history, count, dropped = drop_first(history), count - 1, dropped + 1
  end
  redis.call('HSET', job, 'history', history, 'history_count', count)
  if dropped > 0 then
    redis.call('HINCRBY', job, 'history_dropped', dropped)
  end
end
