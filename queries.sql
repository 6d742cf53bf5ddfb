-- Every SQL statement chat.py runs. chat.py splits this file on the
-- "-- name:" lines; the comment line under each name says what it does.

-- name: ping
-- A trivial query: the database answers (GET /readyz).
select 1

-- name: create_user
-- Store a new account; a duplicate email raises a unique violation.
insert into users (name, email, password_hash)
values ($1, $2, $3)
returning id, name, email

-- name: get_login
-- The id, name and password hash for an email, to check a login.
select id, name, password_hash
from users
where email = $1

-- name: get_user
-- One user by id and their password hash, to check a token.
select id, name, password_hash
from users
where id = $1

-- name: set_password
-- Replace a user's password hash.
update users
set password_hash = $2
where id = $1

-- name: list_users
-- Everyone, by name, and whether they have a socket open on any process.
select u.id, u.name, exists (select from presence p where p.user_id = u.id) as online
from users u
order by u.name, u.id

-- name: insert_chat
-- Create a chat (a group with its owner); a private chat whose pair already exists yields no row.
insert into chats (type, name, private_key, owner_id)
values ($1, $2, $3, $4)
on conflict (private_key) do nothing
returning id, type, name, owner_id

-- name: add_members
-- Put the given users into a chat; an unknown user raises a foreign key violation.
insert into chat_members (chat_id, user_id)
select $1, unnest($2::uuid[])

-- name: get_private_chat
-- The private chat of a pair of users, with its members.
select c.id, c.type, c.name, c.owner_id, array_agg(m.user_id order by m.user_id) as members
from chats c
join chat_members m on m.chat_id = c.id
where c.private_key = $1
group by c.id

-- name: list_chats
-- The user's chats with members, unread count and last message, latest activity first.
select c.id, c.type, c.name, c.owner_id,
       array(select m.user_id from chat_members m join users u on u.id = m.user_id
             where m.chat_id = c.id order by u.name, u.id) as member_ids,
       array(select u.name from chat_members m join users u on u.id = m.user_id
             where m.chat_id = c.id order by u.name, u.id) as member_names,
       (select count(*) from unread r join messages um on um.id = r.message_id
        where r.user_id = $1 and um.chat_id = c.id) as unread,
       last.id as last_id, last.sender_id as last_sender_id, last.text as last_text,
       last.sent_at as last_sent_at, last.is_read as last_is_read, last.edited_at as last_edited_at,
       last.reply_to as last_reply_to
from chat_members me
join chats c on c.id = me.chat_id
left join lateral (
    select id, sender_id, text, sent_at, is_read, edited_at, reply_to
    from messages
    where chat_id = c.id and deleted_at is null
    order by id desc
    limit 1
) last on true
where me.user_id = $1
order by coalesce(last.sent_at, c.created_at) desc, c.id desc

-- name: get_access
-- Whether a chat exists and whether a user is one of its members.
select exists (select 1 from chats where id = $1) as chat_exists,
       exists (select 1 from chat_members where chat_id = $1 and user_id = $2) as is_member

-- name: create_messages
-- Store a batch of messages (arrays $1..$5: chat, sender, text, client_msg_id, reply_to) in one statement,
-- with unread rows for the other members and a new_message event each; returns each stored
-- message with its place n in the batch, its event and the members to tell (no row for a
-- non-member or a repeated client_msg_id).
with batch as (
    select b.*, nextval(pg_get_serial_sequence('messages', 'id')) as id
    from unnest($1::int[], $2::uuid[], $3::text[], $4::text[], $5::bigint[])
         with ordinality as b (chat_id, sender_id, text, client_msg_id, reply_to, n)
    where exists (select from chat_members m where m.chat_id = b.chat_id and m.user_id = b.sender_id)
    order by b.n  -- ids in the order sent: nextval runs after the sort (a hash join may reorder rows)
), message as (
    insert into messages (id, chat_id, sender_id, text, client_msg_id, reply_to)
    select id, chat_id, sender_id, text, client_msg_id, reply_to
    from batch
    order by id
    on conflict (sender_id, client_msg_id) do nothing
    returning id, chat_id, sender_id, text, sent_at, is_read, edited_at, reply_to
), recipients as (
    insert into unread (user_id, message_id)
    select m.user_id, message.id
    from message
    join chat_members m on m.chat_id = message.chat_id
    where m.user_id <> message.sender_id
), event as (
    insert into events (user_ids, message_id)
    select array(select m.user_id from chat_members m where m.chat_id = message.chat_id), message.id
    from message
    order by message.id
    returning id as event_id, message_id as id, user_ids
)
select batch.n, message.*, event.event_id, event.user_ids
from message
join batch using (id)
join event using (id)

-- name: get_sent_message
-- The message a sender already stored under a client_msg_id.
select id, chat_id, sender_id, text, sent_at, is_read, edited_at, reply_to
from messages
where sender_id = $1 and client_msg_id = $2

-- name: list_unread
-- The oldest messages a user has not marked read after a message id: a range of unread's primary key.
select m.id, m.chat_id, m.sender_id, m.text, m.sent_at, m.is_read, m.edited_at, m.reply_to
from unread u
join messages m on m.id = u.message_id
where u.user_id = $1 and u.message_id > $2
order by u.message_id
limit $3

-- name: delete_unread
-- Mark messages read for one user; returns only the ids that were unread for them.
delete from unread
where user_id = $1 and message_id = any($2::bigint[])
returning message_id

-- name: lock_messages
-- Lock messages in id order, so two last readers of one message take turns.
select id
from messages
where id = any($1::bigint[])
order by id
for update

-- name: complete_messages
-- Flag as read the messages nobody has left unread, once; returns them with their senders.
update messages m
set is_read = true
where m.id = any($1::bigint[])
  and not m.is_read
  and m.deleted_at is null
  and not exists (select 1 from unread u where u.message_id = m.id)
returning m.id, m.chat_id, m.sender_id

-- name: list_history
-- One page of a chat's messages, newest first (deleted ones are gone).
select id, chat_id, sender_id, text, sent_at, is_read, edited_at, reply_to
from messages
where chat_id = $1 and deleted_at is null
order by id desc
limit $2 offset $3

-- name: can_reply_to
-- Whether a user may reply to a message in a chat: they are a member, and it is there, not deleted.
select exists (
    select from messages m
    join chat_members me on me.chat_id = m.chat_id and me.user_id = $3
    where m.id = $1 and m.chat_id = $2 and m.deleted_at is null
)

-- name: make_search_query
-- The words of a search as a tsquery's text: each word a prefix, all of them needed (null: no words).
-- Split and lowercased exactly as messages_search indexes a text, then quoted: any input is just words.
select string_agg(quote_literal(word) || ':*', ' & ')
from unnest(tsvector_to_array(to_tsvector('simple', regexp_replace($1, '[^[:alnum:]]+', ' ', 'g')))) as word

-- name: search_messages
-- A page of the messages matching tsquery $2 in the chats user $1 is in now (or only chat $3), older
-- than message $4, newest first. A rare word's matches (5,000 or fewer in all) are read through the
-- index messages_search, whose expression the match repeats to the character; a common word's, chat
-- by chat, walking each chat backwards (chat_id, id). Either way a search reads no more than that
-- many matches, or the user's own chats: never everyone's messages (one walk back through all
-- messages, PostgreSQL's choice for a word it guesses common, read 1,000,000 for a user in quiet chats).
with found as materialized (
    select m.id
    from messages m
    where to_tsvector('simple', regexp_replace(m.text, '[^[:alnum:]]+', ' ', 'g')) @@ $2::tsquery
      and ($4::bigint is null or m.id < $4)
      and m.deleted_at is null
    limit 5001
), chats as (
    select chat_id from chat_members where user_id = $1 and ($3::int is null or chat_id = $3)
)
select *
from (
    (select m.id, m.chat_id, m.sender_id, m.text, m.sent_at, m.is_read, m.edited_at, m.reply_to
     from found
     -- one lookup per match: a plain join may walk the primary key through every message
     cross join lateral (select * from messages where id = found.id limit 1) m
     where (select count(*) from found) <= 5000
       and m.chat_id in (select chat_id from chats)
     order by m.id desc
     limit $5)
    union all
    (select m.*
     from chats
     cross join lateral (
         select m.id, m.chat_id, m.sender_id, m.text, m.sent_at, m.is_read, m.edited_at, m.reply_to
         from messages m
         where m.chat_id = chats.chat_id
           and to_tsvector('simple', regexp_replace(m.text, '[^[:alnum:]]+', ' ', 'g')) @@ $2::tsquery
           and ($4::bigint is null or m.id < $4)
           and m.deleted_at is null
         order by m.id desc
         limit $5
     ) m
     where (select count(*) from found) > 5000
     order by m.id desc
     limit $5)
) page
order by id desc
limit $5

-- name: list_history_before
-- The page of a chat's messages just older than a message id, newest first: keyset paging, as fast at any depth.
select id, chat_id, sender_id, text, sent_at, is_read, edited_at, reply_to
from messages
where chat_id = $1 and id < $2 and deleted_at is null
order by id desc
limit $3

-- name: publish_event
-- Record a frame for the sockets of these users (the writing process delivers it after the commit); its id.
insert into events (user_ids, frame)
values ($1, $2)
returning id

-- name: get_last_event_id
-- The newest event, where a starting process begins to listen.
select coalesce(max(id), 0)
from events

-- name: get_bus_lag
-- How far a process's bus is behind the newest committed event: the ids after the newest it has read
-- ($1; a rolled-back id counts too), and the seconds the oldest event after it has waited. Two index probes.
select greatest(coalesce(max(id), 0) - $1, 0) as events,
       coalesce(extract(epoch from now() - (select created_at from events where id > $1 order by id limit 1)), 0)::float8
           as seconds
from events

-- name: list_events
-- Events after the last one this process read ($1), and the passed-over older ids ($2) that
-- have committed since; a new_message frame is built from its message row. Events that process
-- $4 wrote come back as bare ids: it delivered them itself.
-- Written to be index lookups whatever the statistics say: "id > $1 or id = any($2)" reads
-- every event, and a plain join (or a lateral one without its "limit 1") may read every message.
select e.id as event_id,
       case when e.origin is distinct from $4 then e.user_ids end as user_ids,
       case when e.origin is distinct from $4 then e.frame end as frame,
       m.id, m.chat_id, m.sender_id, m.text, m.sent_at, m.is_read, m.edited_at, m.reply_to, m.deleted_at is not null as deleted
from (
    (select * from events where id = any($2::bigint[]))
    union all
    (select * from events where id > $1 order by id limit $3)
) e
left join lateral (
    select * from messages where id = e.message_id and e.origin is distinct from $4 limit 1
) m on true
order by e.id

-- name: prune_events
-- Forget events older than the retention window ($1 seconds), and remember the newest id forgotten.
with pruned as (
    delete from events
    where created_at < now() - make_interval(secs => $1)
    returning id
)
update stream
set pruned_through = greatest(pruned_through, (select max(id) from pruned))
where exists (select from pruned)

-- name: get_stream
-- The name of this database's event stream, the newest event id pruned, and the newest event id.
select epoch, pruned_through, greatest(pruned_through, (select max(id) from events)) as newest
from stream

-- name: list_user_events
-- A user's events after a cursor (after id $2, but for id $3), oldest first, at most $4; presence is left
-- out, and new_message events come with their message row. The user's events are read first, by the GIN
-- index on user_ids, whatever the plan: otherwise a plan may walk the primary key from $2 and read
-- everybody's events (PostgreSQL's generic plan of this statement did, after five runs).
with mine as materialized (
    select id, frame, message_id
    from events
    where user_ids @> array[$1::uuid]
)
select e.id as event_id, e.frame,
       m.id, m.chat_id, m.sender_id, m.text, m.sent_at, m.is_read, m.edited_at, m.reply_to, m.deleted_at is not null as deleted
from mine e
left join lateral (
    select * from messages where id = e.message_id limit 1
) m on true
where e.id > $2
  and e.id <> $3
  and (e.frame is null or e.frame ->> 'action' not in ('presence', 'password_changed'))
order by e.id
limit $4

-- name: add_process
-- Announce a running server process, alive for $2 seconds unless it beats again.
insert into processes (id, expires_at)
values ($1, now() + make_interval(secs => $2))

-- name: beat_process
-- A running process's heartbeat: alive for $2 more seconds; updates nothing if it was taken for dead meanwhile.
update processes
set expires_at = now() + make_interval(secs => $2)
where id = $1

-- name: lock_presence
-- Make presence changes take turns across processes, so each change is announced once.
select pg_advisory_xact_lock(hashtext('chat.presence'))

-- name: set_presence
-- Add ($2) and remove ($3) the users with sockets on process $1; returns those whose
-- online state changed everywhere.
with came as (
    insert into presence (user_id, process_id)
    select unnest($2::uuid[]), $1
    on conflict do nothing
    returning user_id, true as online
), gone as (
    delete from presence
    where process_id = $1 and user_id = any($3::uuid[])
    returning user_id, false as online
)
select user_id, online
from (select * from came union all select * from gone) changed
where not exists (select from presence p where p.user_id = changed.user_id and p.process_id <> $1)

-- name: reap_processes
-- Forget process $1 (stopping) and processes that stopped beating (died), with their
-- sockets; returns the users now offline everywhere.
with dead as (
    delete from processes
    where id = $1 or expires_at < now()
    returning id
), gone as (
    delete from presence p
    using dead
    where p.process_id = dead.id
    returning p.user_id
)
select distinct user_id, false as online
from gone
where not exists (
    select from presence p
    where p.user_id = gone.user_id and p.process_id not in (select id from dead)
)

-- name: publish_presence
-- Tell the chat partners of each user ($1) that they came online or went offline ($2); returns the events.
insert into events (user_ids, frame)
select partners.user_ids,
       jsonb_build_object('action', 'presence',
                          'data', jsonb_build_object('user_uuid', changed.user_id, 'online', changed.online))
from unnest($1::uuid[], $2::bool[]) as changed (user_id, online)
cross join lateral (
    -- The user's chats first, then their members, each by an index: written as a join,
    -- PostgreSQL hashed all of chat_members once per user (2,000 users at once: 570 ms; now 55).
    select array(
        select distinct other.user_id
        from chat_members other
        where other.chat_id = any(array(select chat_id from chat_members where user_id = changed.user_id))
          and other.user_id <> changed.user_id
    ) as user_ids
) partners
where cardinality(partners.user_ids) > 0
returning id, user_ids, frame

-- name: get_message_access
-- A message's chat, sender and state, and whether a user is a member of its chat.
select m.chat_id, m.sender_id, m.deleted_at is not null as deleted, c.type, c.owner_id,
       exists (select 1 from chat_members where chat_id = m.chat_id and user_id = $2) as is_member
from messages m
join chats c on c.id = m.chat_id
where m.id = $1

-- name: edit_message
-- Give a message new text; a deleted one is left alone (no row).
update messages
set text = $2, edited_at = now()
where id = $1 and deleted_at is null
returning id, chat_id, sender_id, text, sent_at, is_read, edited_at, reply_to

-- name: delete_message_unread
-- Forget who had a message unread, before it is deleted (the order mark_read locks them in).
delete from unread
where message_id = $1

-- name: delete_message
-- Delete a message: its text goes, its row stays as a tombstone (no row if already deleted).
update messages
set text = '', deleted_at = now()
where id = $1 and deleted_at is null
returning id, chat_id

-- name: forget_message_events
-- Drop the edit events of a deleted message, so that its old texts leave the database too.
delete from events
where frame ->> 'action' = 'message_edited' and (frame -> 'data' ->> 'id')::bigint = $1

-- name: list_member_ids
-- The members of a chat, longest first.
select array_agg(user_id order by joined_at, user_id)
from chat_members
where chat_id = $1

-- name: lock_chat
-- A chat, locked: its membership changes one at a time.
select id, type, owner_id
from chats
where id = $1
for update

-- name: get_chat
-- A chat with its members, longest first.
select c.id, c.type, c.name, c.owner_id,
       array(select user_id from chat_members where chat_id = c.id order by joined_at, user_id) as members
from chats c
where c.id = $1

-- name: join_chat
-- Add users to a chat; those already in it are left as they are (an unknown user: foreign key violation).
insert into chat_members (chat_id, user_id)
select $1, unnest($2::uuid[])
on conflict do nothing

-- name: leave_chat
-- Take a user out of a chat; no row if they were not in it.
delete from chat_members
where chat_id = $1 and user_id = $2
returning user_id

-- name: forget_unread_in_chat
-- What a user who left still had unread in that chat, forgotten: returns those messages.
delete from unread u
using messages m
where u.user_id = $2 and u.message_id = m.id and m.chat_id = $1
returning u.message_id

-- name: pass_ownership
-- Make the member who has been in a group longest its owner (none left: no owner).
update chats
set owner_id = (select user_id from chat_members where chat_id = $1 order by joined_at, user_id limit 1)
where id = $1

-- name: rename_chat
-- Give a chat a new name.
update chats
set name = $2
where id = $1

-- name: notify_typing
-- Whether a chat exists, its members, and, if user $2 is one, a NOTIFY ($3) that tells the other processes they are typing.
select exists (select from chats where id = $1) as chat_exists,
       array(select user_id from chat_members where chat_id = $1) as members,
       case when exists (select from chat_members where chat_id = $1 and user_id = $2)
            then pg_notify('chat_typing', $3) end as notified
