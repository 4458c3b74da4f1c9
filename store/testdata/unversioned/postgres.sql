--
-- PostgreSQL database dump
--


-- Dumped from database version 15.18 (Debian 15.18-0+deb12u1)
-- Dumped by pg_dump version 15.18 (Debian 15.18-0+deb12u1)

SET statement_timeout = 0;
SET lock_timeout = 0;
SET idle_in_transaction_session_timeout = 0;
SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;
SELECT pg_catalog.set_config('search_path', '', false);
SET check_function_bodies = false;
SET xmloption = content;
SET client_min_messages = warning;
SET row_security = off;

SET default_tablespace = '';

SET default_table_access_method = heap;

--
-- Name: approvals; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.approvals (
    id text NOT NULL,
    device text NOT NULL,
    source text NOT NULL,
    created bigint NOT NULL,
    deadline bigint NOT NULL,
    state text NOT NULL
);


--
-- Name: audit; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.audit (
    seq bigint NOT NULL,
    "time" bigint NOT NULL,
    device text NOT NULL,
    action text NOT NULL,
    source text NOT NULL,
    decision text NOT NULL,
    reason text NOT NULL,
    actor text NOT NULL,
    prev text NOT NULL
);


--
-- Name: audit_head; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.audit_head (
    id bigint NOT NULL,
    seq bigint NOT NULL,
    hash text NOT NULL
);


--
-- Name: devices; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.devices (
    id text NOT NULL,
    name text NOT NULL,
    grp text NOT NULL,
    key_id text NOT NULL,
    public_key bytea NOT NULL,
    state text NOT NULL,
    reason text NOT NULL,
    exchange_key bytea,
    exchange_pub text NOT NULL,
    policy text NOT NULL,
    created bigint NOT NULL,
    updated bigint NOT NULL,
    last_seen bigint NOT NULL,
    version bigint NOT NULL
);


--
-- Name: groups; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.groups (
    name text NOT NULL,
    policy text NOT NULL
);


--
-- Name: settings; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.settings (
    name text NOT NULL,
    value text NOT NULL
);


--
-- Name: tokens; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.tokens (
    hash bytea NOT NULL,
    grp text NOT NULL,
    note text NOT NULL,
    created bigint NOT NULL,
    expires bigint NOT NULL
);


--
-- Name: ui_sessions; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.ui_sessions (
    id text NOT NULL,
    usr text NOT NULL,
    csrf text NOT NULL,
    source text NOT NULL,
    created bigint NOT NULL,
    last_seen bigint NOT NULL
);


--
-- Name: ui_users; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.ui_users (
    name text NOT NULL,
    hash text NOT NULL,
    created bigint NOT NULL,
    updated bigint NOT NULL
);


--
-- Data for Name: approvals; Type: TABLE DATA; Schema: public; Owner: -
--

COPY public.approvals (id, device, source, created, deadline, state) FROM stdin;
appr-pending	dev-disabled	192.0.2.7	1767325445000006000	1767325745000006000	pending
appr-used	dev-enabled	192.0.2.8	1767325505000006000	1767325805000006000	used
\.


--
-- Data for Name: audit; Type: TABLE DATA; Schema: public; Owner: -
--

COPY public.audit (seq, "time", device, action, source, decision, reason, actor, prev) FROM stdin;
1	1767323045000006000	dev-enabled	enroll	192.0.2.7	allow			0000000000000000000000000000000000000000000000000000000000000000
2	1767323705000006000	dev-enabled	unlock	192.0.2.7	allow			c2eb325820da878576a079669f8ba3ab0d1afef238c41d2f264ae6ca1247889b
3	1767324245000006000	dev-revoked	device.revoke		ok	laptop stolen	admin	e092ebb3ae57cf468dd998ce946cd69c19709c6bf414ee52fb9ef856ca642634
4	1767324305000006000	dev-revoked	unlock	198.51.100.1	deny	device dev-revoked was revoked		d58a23ebd9197c9def1fa5d5060d840216d4c70c96bcec87b1ff27046d4a8e40
5	1767325445000006000	dev-disabled	unlock	192.0.2.7	wait	approval required: "quoted" ünïcode		a83be87392c5bc3781e430f3fdbd2980a8f22658d66dfb050784703657942a91
\.


--
-- Data for Name: audit_head; Type: TABLE DATA; Schema: public; Owner: -
--

COPY public.audit_head (id, seq, hash) FROM stdin;
1	5	3a029f7ec7df5d1481a7c766496c493268bea6aaef9099e8bd86f590bb481110
\.


--
-- Data for Name: devices; Type: TABLE DATA; Schema: public; Owner: -
--

COPY public.devices (id, name, grp, key_id, public_key, state, reason, exchange_key, exchange_pub, policy, created, updated, last_seen, version) FROM stdin;
dev-pending	laptop		key-pending	\\x73706b6900ff2d6b65792d70656e64696e67	pending		\\x777261707065640001fe2d6465762d70656e64696e67	{"kty":"EC","crv":"P-256","x":"dev-pending","y":"y"}	{}	1767323105000006000	1767323105000006000	1767323705000006000	1
dev-disabled	db-1	servers	key-disabled	\\x73706b6900ff2d6b65792d64697361626c6564	disabled	keep-alive timeout	\\x777261707065640001fe2d6465762d64697361626c6564	{"kty":"EC","crv":"P-256","x":"dev-disabled","y":"y"}	{"approval":true}	1767323165000006000	1767323165000006000	1767323765000006000	1
dev-revoked	stolen	laptops	key-revoked	\\x73706b6900ff2d6b65792d7265766f6b6564	revoked	laptop stolen	\N	{"kty":"EC","crv":"P-256","x":"dev-revoked","y":"y"}	{}	1767323225000006000	1767324245000006000	1767323825000006000	2
dev-enabled	web-1	servers	key-enabled	\\x73706b6900ff2d6b65792d656e61626c6564	enabled		\\x777261707065640001fe2d6465762d656e61626c6564	{"kty":"EC","crv":"P-256","x":"dev-enabled","y":"y"}	{"cidrs":["10.0.0.0/8","fd00::/8"],"keepalive":"5m0s","approval":false,"rate":7}	1767323045000006000	1767323045000006000	1767324845000006000	1
\.


--
-- Data for Name: groups; Type: TABLE DATA; Schema: public; Owner: -
--

COPY public.groups (name, policy) FROM stdin;
servers	{"cidrs":["192.0.2.0/24"],"keepalive":"1h0m0s"}
laptops	{"approval":true,"rate":2}
\.


--
-- Data for Name: settings; Type: TABLE DATA; Schema: public; Owner: -
--

COPY public.settings (name, value) FROM stdin;
enroll.open	off
kek.check	check-value
\.


--
-- Data for Name: tokens; Type: TABLE DATA; Schema: public; Owner: -
--

COPY public.tokens (hash, grp, note, created, expires) FROM stdin;
\\x746f6b656e2d686173682d303132333435363738396162636465663031323334	servers	rack 4	1767323105000006000	1767409445000006000
\\x746f6b656e2d686173682d657870697265642d30313233343536373839616263			1767323105000006000	1767323165000006000
\.


--
-- Data for Name: ui_sessions; Type: TABLE DATA; Schema: public; Owner: -
--

COPY public.ui_sessions (id, usr, csrf, source, created, last_seen) FROM stdin;
session-id-hash	alice	csrf-token	192.0.2.9	1767323285000006000	1767323345000006000
\.


--
-- Data for Name: ui_users; Type: TABLE DATA; Schema: public; Owner: -
--

COPY public.ui_users (name, hash, created, updated) FROM stdin;
alice	$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA	1767323165000006000	1767323225000006000
\.


--
-- Name: approvals approvals_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.approvals
    ADD CONSTRAINT approvals_pkey PRIMARY KEY (id);


--
-- Name: audit_head audit_head_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.audit_head
    ADD CONSTRAINT audit_head_pkey PRIMARY KEY (id);


--
-- Name: audit audit_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.audit
    ADD CONSTRAINT audit_pkey PRIMARY KEY (seq);


--
-- Name: devices devices_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.devices
    ADD CONSTRAINT devices_pkey PRIMARY KEY (id);


--
-- Name: groups groups_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.groups
    ADD CONSTRAINT groups_pkey PRIMARY KEY (name);


--
-- Name: settings settings_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.settings
    ADD CONSTRAINT settings_pkey PRIMARY KEY (name);


--
-- Name: tokens tokens_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.tokens
    ADD CONSTRAINT tokens_pkey PRIMARY KEY (hash);


--
-- Name: ui_sessions ui_sessions_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.ui_sessions
    ADD CONSTRAINT ui_sessions_pkey PRIMARY KEY (id);


--
-- Name: ui_users ui_users_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.ui_users
    ADD CONSTRAINT ui_users_pkey PRIMARY KEY (name);


--
-- Name: devices_created; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX devices_created ON public.devices USING btree (created, id);


--
-- Name: devices_key; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX devices_key ON public.devices USING btree (key_id);


--
-- Name: devices_live_key; Type: INDEX; Schema: public; Owner: -
--

CREATE UNIQUE INDEX devices_live_key ON public.devices USING btree (key_id) WHERE (state <> 'revoked'::text);


--
-- PostgreSQL database dump complete
--


