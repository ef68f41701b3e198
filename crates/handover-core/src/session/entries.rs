//! Salesforce call results and conversation entries.

use std::time::Duration;

use crate::bot::{
    AgentMessage, BotDelivery, EndReason, HandoverStatus, MissedEntries, Notification,
    ProviderEvent, QueueUpdate,
};
use crate::ids::{BotMessageId, CallId, EntryId};
use crate::io::{Command, EchoMatch, Observation};
use crate::salesforce::{
    CallFailure, ConversationEntry, EntryPayload, MessageContent, ParticipantChange,
    ParticipantOperation, Role, RoutingResult, RoutingStatus, RoutingType, SalesforceRequest,
    SalesforceResponse, Sender, SessionStatus,
};
use crate::time::Timestamp;
use crate::timer::Timer;

use super::{
    Backfill, BoundsReading, ConversationState, DeepBackfill, HeldEntry, PageStep, Pending, Phase,
    Session, record,
};

/// What a page of a backfill showed.
struct PageFacts {
    /// It held as many entries as asked for: there may be more.
    full: bool,
    /// Its oldest entry's time.
    oldest: Option<Timestamp>,
    /// It brought an entry not listed before.
    progress: bool,
    /// A page forward from a crowded millisecond also listed the millisecond before.
    older_than_crowded: bool,
    /// A page forward from a crowded millisecond reached what the pages going back listed.
    closes_crowded: bool,
}

/// What a backfill does after a page.
enum Next {
    Page(PageStep),
    Done,
    Incomplete,
}

/// Whether an entry changes what the user or the Flow sees, so that its place in the
/// conversation matters. Typing, progress, receipts and the echo of the user's own messages
/// do not wait for a listing.
fn is_ordered(entry: &ConversationEntry) -> bool {
    match &entry.payload {
        EntryPayload::Message(_) => entry.sender.role != Role::EndUser,
        EntryPayload::ParticipantChanged(_)
        | EntryPayload::RoutingResult(_)
        | EntryPayload::SessionStatusChanged { .. }
        | EntryPayload::CloseConversation
        | EntryPayload::QueuePosition { .. } => true,
        EntryPayload::TypingStarted
        | EntryPayload::TypingStopped
        | EntryPayload::DeliveryAcknowledged { .. }
        | EntryPayload::ReadAcknowledged { .. }
        | EntryPayload::ProgressIndicator { .. }
        | EntryPayload::Unknown { .. } => false,
    }
}

fn ends_session(entry: &ConversationEntry) -> bool {
    matches!(
        entry.payload,
        EntryPayload::SessionStatusChanged {
            status: SessionStatus::Ended,
            ..
        }
    )
}

/// A sign that a messaging session (re)started: its status changed to anything but Ended, or
/// it was routed afresh.
fn starts_session(entry: &ConversationEntry) -> bool {
    match &entry.payload {
        EntryPayload::SessionStatusChanged { status, .. } => *status != SessionStatus::Ended,
        EntryPayload::RoutingResult(result) => {
            result.routing_type == RoutingType::Initial && result.failure.is_none()
        }
        EntryPayload::Message(_)
        | EntryPayload::ParticipantChanged(_)
        | EntryPayload::CloseConversation
        | EntryPayload::TypingStarted
        | EntryPayload::TypingStopped
        | EntryPayload::DeliveryAcknowledged { .. }
        | EntryPayload::ReadAcknowledged { .. }
        | EntryPayload::QueuePosition { .. }
        | EntryPayload::ProgressIndicator { .. }
        | EntryPayload::Unknown { .. } => false,
    }
}

/// Oldest first; entries without a server time last.
fn order_key(entry: &ConversationEntry) -> (bool, Option<Timestamp>) {
    (entry.server_time.is_none(), entry.server_time)
}

/// Adds a page (in Salesforce's order) to the entries collected so far (in Salesforce's
/// order), keeping one order: a new entry goes next to an entry both lists share, or, where
/// they share none, by time, before what was collected in its millisecond (pages go back in
/// time, and a page forward from a crowded millisecond lists its oldest entries). Returns how
/// many entries were new.
fn merge_page(collected: &mut Vec<ConversationEntry>, page: Vec<ConversationEntry>) -> usize {
    let position = |list: &[ConversationEntry], id: &EntryId| {
        list.iter().position(|entry| &entry.identifier == id)
    };
    let shared: Vec<bool> = page
        .iter()
        .map(|entry| position(collected, &entry.identifier).is_some())
        .collect();
    if !shared.contains(&true) {
        let fresh = page.len();
        for entry in page.into_iter().rev() {
            let at = collected
                .iter()
                .position(|known| order_key(known) >= order_key(&entry))
                .unwrap_or(collected.len());
            collected.insert(at, entry);
        }
        return fresh;
    }
    let ids: Vec<EntryId> = page.iter().map(|e| e.identifier.clone()).collect();
    let mut fresh = 0;
    for (index, entry) in page.into_iter().enumerate() {
        if shared[index] {
            continue;
        }
        fresh += 1;
        // Before the next shared entry of the page, or else after the entry before it (shared,
        // or inserted just now).
        let at = match (index + 1..ids.len()).find(|&later| shared[later]) {
            Some(anchor) => position(collected, &ids[anchor]).unwrap_or(collected.len()),
            None => index
                .checked_sub(1)
                .and_then(|before| position(collected, &ids[before]))
                .map_or(collected.len(), |p| p + 1),
        };
        collected.insert(at, entry);
    }
    fresh
}

/// Where an entry came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Source {
    /// The event stream (live or replayed).
    Stream,
    /// The entries list.
    Backfill,
}

impl Session {
    pub(super) fn on_salesforce(
        &mut self,
        out: &mut Vec<Command>,
        now: Timestamp,
        call: CallId,
        result: Result<SalesforceResponse, CallFailure>,
    ) {
        let Some(pending) = self.calls.remove(&call) else {
            record(out, Observation::StaleResult);
            return;
        };
        match pending {
            Pending::Mint { renewal, attempt } => {
                self.on_mint_result(out, now, renewal, attempt, result);
            }
            Pending::Continue { attempt } => self.on_continue_result(out, now, attempt, result),
            Pending::Create { attempt } => self.on_create_result(out, now, attempt, result),
            Pending::Send => self.on_send_result(out, now, call, result),
            Pending::Backfill => self.on_backfill_result(out, now, call, result),
            Pending::RoutingStatus => self.on_routing_status(out, now, call, result),
            Pending::Close { attempt } => self.on_close_result(out, now, attempt, result),
            Pending::BestEffort => {
                if let Err(failure) = result {
                    record(out, Observation::BestEffortFailed);
                    if failure == CallFailure::Unauthorized {
                        self.on_unauthorized(out, now);
                    }
                }
            }
            Pending::Bot | Pending::BotTyping => {
                // A bot call answered as if it were a Salesforce call: a driver bug.
                self.calls.insert(call, pending);
                record(out, Observation::StaleResult);
            }
        }
    }

    // ---- backfill ----------------------------------------------------------------------------

    /// Lists recent entries unless a routine listing is already under way. Returns whether a
    /// backfill is now under way.
    pub(super) fn request_backfill(
        &mut self,
        out: &mut Vec<Command>,
        now: Timestamp,
        last: bool,
    ) -> bool {
        // While the create call is in flight, entries of the conversation prove it exists.
        if self.conversation == ConversationState::NotCreated {
            return false;
        }
        // A listing under way serves a routine backfill. A final one must list what exists
        // now, after the end signal, so it starts afresh and the older listing's answer is
        // dropped when it comes.
        if !last && self.backfill.is_some() {
            return true;
        }
        // After a backfill that ran out of pages, the next one goes on below it.
        let step = PageStep::Back {
            before: self.deep.map(|deep| deep.resume_below),
        };
        let limit = self.config.backfill_page_size;
        let Some(call) = self.list_entries(out, now, step, limit) else {
            return false;
        };
        self.backfill = Some(Backfill {
            call,
            last,
            pages: 0,
            step,
            limit,
            newest: None,
            collected: Vec::new(),
            crowded_anchor: None,
        });
        true
    }

    /// The bounds of a page's request: `(endTimestamp, startTimestamp)`.
    fn page_bounds(&self, step: PageStep) -> (Option<Timestamp>, Option<Timestamp>) {
        let millisecond = Duration::from_millis(1);
        let inclusive = self.bounds == BoundsReading::Inclusive;
        let exclusive = self.bounds == BoundsReading::Exclusive;
        match step {
            // Through the millisecond of the previous page's oldest entry: all of it, under
            // either reading, unless the reading is known to be inclusive.
            PageStep::Back { before } => {
                let before = before.map(|boundary| {
                    if inclusive {
                        boundary
                    } else {
                        boundary + millisecond
                    }
                });
                (before, None)
            }
            // From the millisecond before, so that either reading of `startTimestamp` includes
            // the crowded one; from the crowded one itself once the reading is known to be
            // inclusive (the millisecond before may crowd the page).
            PageStep::Crowded { at, second } => {
                let from = if second || inclusive {
                    at
                } else {
                    at.saturating_sub(millisecond)
                };
                (None, Some(from))
            }
            // Below the crowded millisecond: the bound an exclusive reading needs, then (or
            // once the reading is known to be inclusive) the one an inclusive reading needs.
            PageStep::Below { crowded, second } => {
                let before = if (second || inclusive) && !exclusive {
                    crowded.saturating_sub(millisecond)
                } else {
                    crowded
                };
                (Some(before), None)
            }
        }
    }

    fn list_entries(
        &mut self,
        out: &mut Vec<Command>,
        now: Timestamp,
        step: PageStep,
        limit: u32,
    ) -> Option<CallId> {
        let credential = self.credential(now)?;
        let (before, from) = self.page_bounds(step);
        let request = SalesforceRequest::ListEntries {
            conversation_id: self.request.conversation_id,
            before,
            limit,
            from,
        };
        Some(self.call_salesforce(out, Pending::Backfill, Some(credential), request))
    }

    /// A page arrived. Pages go back from the newest entry until they meet the horizon (what
    /// an earlier complete backfill listed), then everything listed is relayed at once, in
    /// server order, together with the stream entries held for it.
    ///
    /// Salesforce does not say whether `endTimestamp` is inclusive, so each page ends one
    /// millisecond after the previous page's oldest entry: both readings then include every
    /// entry of that millisecond, and the identifiers tell the ones already listed. A full
    /// page with nothing new means one millisecond holds more entries than a page: its oldest
    /// entries are listed forward from it, then paging goes on below it. What still cannot be
    /// listed is reported, never skipped without a word.
    fn on_backfill_result(
        &mut self,
        out: &mut Vec<Command>,
        now: Timestamp,
        call: CallId,
        result: Result<SalesforceResponse, CallFailure>,
    ) {
        let Some(mut backfill) = self.backfill.take() else {
            return;
        };
        if backfill.call != call {
            self.backfill = Some(backfill);
            return;
        }
        if self.phase == Phase::Ended {
            // Nothing found now reaches anyone.
            record(out, Observation::IgnoredAfterEnd);
            return;
        }
        backfill.pages += 1;
        let page = match result {
            Ok(SalesforceResponse::Entries(page)) => {
                self.listing_failures = 0;
                page
            }
            failed => {
                record(out, Observation::BestEffortFailed);
                if failed == Err(CallFailure::Unauthorized) {
                    self.on_unauthorized(out, now);
                }
                self.backfill_failed(out, now, backfill);
                return;
            }
        };
        let full = page.len() >= backfill.limit as usize;
        let oldest = page.iter().filter_map(|entry| entry.server_time).min();
        let older_than_crowded = match backfill.step {
            PageStep::Crowded { at, .. } => page
                .iter()
                .any(|entry| entry.server_time.is_some_and(|time| time < at)),
            PageStep::Back { .. } | PageStep::Below { .. } => false,
        };
        // A page forward from a crowded millisecond closes it when it reaches the oldest entry
        // of it that the pages going back listed.
        let closes_crowded = backfill
            .crowded_anchor
            .as_ref()
            .is_some_and(|anchor| page.iter().any(|entry| &entry.identifier == anchor));
        let newest = page.iter().filter_map(|entry| entry.server_time).max();
        backfill.newest = backfill.newest.max(newest);
        self.learn_bounds(backfill.step, &backfill.collected, &page);
        let fresh = merge_page(&mut backfill.collected, page);

        let facts = PageFacts {
            full,
            oldest,
            progress: fresh > 0,
            older_than_crowded,
            closes_crowded,
        };
        let next = self.next_page(out, &mut backfill, &facts);
        let out_of_pages = backfill.pages >= self.config.backfill_max_pages;
        let next = if matches!(next, Next::Page(_)) && out_of_pages {
            Next::Incomplete
        } else {
            next
        };
        match next {
            Next::Page(step) => {
                if let Some(call) = self.list_entries(out, now, step, backfill.limit) {
                    backfill.call = call;
                    backfill.step = step;
                    self.backfill = Some(backfill);
                } else if self.phase == Phase::Ending {
                    // No token to go on with, and none will come: relay what there is.
                    self.relay_backfill(out, now, backfill, false);
                }
                // Otherwise the token is being recovered, and the stream it reopens starts a
                // backfill of its own; relaying part of the pages now would put newer entries
                // before older ones. The held entries keep waiting, within their bound.
            }
            Next::Done => {
                let listed_down_from = self.deep.take().map(|deep| deep.listed_through);
                let newest = backfill.newest.max(listed_down_from);
                if let Some(newest) = newest {
                    let horizon = self.backfill_horizon.map_or(newest, |h| h.max(newest));
                    self.backfill_horizon = Some(horizon);
                }
                self.relay_backfill(out, now, backfill, true);
            }
            Next::Incomplete => {
                // Entries may be missing below what was listed: relay what there is rather
                // than nothing, and say that the order is not assured. If the pages ran out,
                // the next backfill goes on below them at once, so that nothing stays
                // unlisted however long the outage was.
                record(out, Observation::BackfillIncomplete);
                let oldest = backfill
                    .collected
                    .iter()
                    .filter_map(|entry| entry.server_time)
                    .min();
                let resume = oldest.filter(|_| out_of_pages && !backfill.last);
                if let Some(resume_below) = resume {
                    let listed_through = self
                        .deep
                        .map(|deep| deep.listed_through)
                        .max(backfill.newest)
                        .unwrap_or(resume_below);
                    self.deep = Some(DeepBackfill {
                        resume_below,
                        listed_through,
                    });
                }
                self.relay_backfill(out, now, backfill, false);
                if resume.is_some() && self.phase.is_live() {
                    self.request_backfill(out, now, false);
                }
            }
        }
    }

    /// What follows a page: another page (which), the end of the backfill, or giving up.
    fn next_page(
        &mut self,
        out: &mut Vec<Command>,
        backfill: &mut Backfill,
        facts: &PageFacts,
    ) -> Next {
        let horizon = self.backfill_horizon;
        let reaches_horizon =
            |time: Option<Timestamp>| time.zip(horizon).is_some_and(|(time, h)| time <= h);
        let millisecond = Duration::from_millis(1);
        match backfill.step {
            PageStep::Back { .. } | PageStep::Below { .. } if !facts.full => Next::Done,
            PageStep::Back { .. } if !facts.progress => match facts.oldest {
                Some(at) => {
                    backfill.crowded_anchor = backfill
                        .collected
                        .iter()
                        .find(|entry| entry.server_time == Some(at))
                        .map(|entry| entry.identifier.clone());
                    Next::Page(PageStep::Crowded { at, second: false })
                }
                None => Next::Incomplete,
            },
            PageStep::Back { .. } | PageStep::Below { .. } if facts.progress => {
                match facts.oldest {
                    Some(_) if reaches_horizon(facts.oldest) => Next::Done,
                    Some(oldest) => Next::Page(PageStep::Back {
                        before: Some(oldest),
                    }),
                    None => Next::Incomplete,
                }
            }
            // An inclusive reading of `startTimestamp` also listed the millisecond before,
            // which may have crowded out the one wanted: ask again from that one itself.
            PageStep::Crowded { at, second: false }
                if facts.full && !facts.closes_crowded && facts.older_than_crowded =>
            {
                Next::Page(PageStep::Crowded { at, second: true })
            }
            PageStep::Crowded { at, .. } => {
                backfill.crowded_anchor = None;
                if facts.full && !facts.closes_crowded {
                    // Between the newest entries of this millisecond (listed going back) and
                    // its oldest (listed going forward) some may not fit in either page.
                    let missed = MissedEntries { from: at, to: at };
                    self.report_missed(out, missed);
                }
                if reaches_horizon(Some(at.saturating_sub(millisecond))) {
                    Next::Done
                } else {
                    Next::Page(PageStep::Below {
                        crowded: at,
                        second: false,
                    })
                }
            }
            PageStep::Below {
                crowded,
                second: false,
            } => Next::Page(PageStep::Below {
                crowded,
                second: true,
            }),
            PageStep::Back { .. } | PageStep::Below { .. } => Next::Incomplete,
        }
    }

    /// Learns how Salesforce reads the time bounds from a page: an entry exactly at a bound
    /// proves it inclusive; no entry at a bound where one is known to exist proves it
    /// exclusive.
    fn learn_bounds(
        &mut self,
        step: PageStep,
        collected: &[ConversationEntry],
        page: &[ConversationEntry],
    ) {
        if self.bounds != BoundsReading::Unknown || page.is_empty() {
            return;
        }
        let (before, from) = self.page_bounds(step);
        let times = || page.iter().filter_map(|entry| entry.server_time);
        let known_at = |bound: Timestamp| {
            collected
                .iter()
                .any(|entry| entry.server_time == Some(bound))
        };
        for (bound, beyond) in [
            (before, times().max().is_some_and(|t| Some(t) < before)),
            (from, times().min().is_some_and(|t| Some(t) > from)),
        ] {
            let Some(bound) = bound else { continue };
            if times().any(|time| time == bound) {
                self.bounds = BoundsReading::Inclusive;
            } else if beyond && known_at(bound) {
                self.bounds = BoundsReading::Exclusive;
            }
        }
    }

    /// A page could not be had. The pages so far may stop short of older entries nobody has
    /// seen, so relaying them would put newer entries first: they are dropped, and the listing
    /// is asked for again (backing off from 250 ms) while the held stream entries may still
    /// wait; past their bound they go as they are. The final backfill is asked for again
    /// within the retry budget, then relays what it has and the handover ends.
    fn backfill_failed(&mut self, out: &mut Vec<Command>, now: Timestamp, backfill: Backfill) {
        self.listing_failures = self.listing_failures.saturating_add(1);
        let exponent = self.listing_failures.saturating_sub(1).min(6);
        let delay = Duration::from_millis(250) * (1_u32 << exponent);
        let retry = now + delay;
        if backfill.last {
            // The end waits for the final listing, within the retry budget.
            if self.listing_failures < self.config.retry.max_attempts {
                self.timers.set(Timer::ListingRetry, retry);
            } else {
                self.relay_backfill(out, now, backfill, false);
            }
            return;
        }
        if self.held.is_empty() {
            return;
        }
        // Held entries wait for another try, with backoff, until their bound.
        match self.timers.get(Timer::StreamHold) {
            Some(release) if retry < release => self.timers.set(Timer::ListingRetry, retry),
            // Too late to try again: the bound releases them.
            Some(_) => {}
            None => self.release_stream_hold(out, now),
        }
    }

    /// The listing the held entries wait for failed a while ago: ask again.
    pub(super) fn retry_listing(&mut self, out: &mut Vec<Command>, now: Timestamp) {
        if self.phase == Phase::Ending {
            if self.backfill.is_none()
                && !self.request_backfill(out, now, true)
                && let Some(ending) = self.ending.take()
            {
                // No token left to list with: end without it.
                self.finish_end(out, now, ending.reason, ending.detail, false);
            }
            return;
        }
        // Without a token to list with, nothing starts, and the hold's bound decides.
        if !self.held.is_empty() && self.phase != Phase::Ended {
            self.request_backfill(out, now, false);
        }
    }

    fn report_missed(&mut self, out: &mut Vec<Command>, missed: MissedEntries) {
        if !self.missed.contains(&missed) {
            self.missed.push(missed);
            record(out, Observation::EntriesMissed { missed });
        }
    }

    /// Relays what a backfill listed together with the stream entries held for it, in server
    /// order. `answered` says whether Salesforce answered the listing: if it did not, the held
    /// entries go as they are. Held entries newer than the listing wait for the next one.
    fn relay_backfill(
        &mut self,
        out: &mut Vec<Command>,
        now: Timestamp,
        backfill: Backfill,
        answered: bool,
    ) {
        let held = std::mem::take(&mut self.held);
        let listed_newest = backfill
            .collected
            .iter()
            .filter_map(|entry| entry.server_time)
            .max();
        // A held entry goes with this listing if the listing has it, or has something newer,
        // or cannot list its millisecond in full. One the listing does not have waits for the
        // next listing (it came after this one was asked for), but not for a third: an entry
        // the entries list never shows is relayed rather than asked for again and again.
        let missed = &self.missed;
        let (covered, waiting): (Vec<_>, Vec<_>) = held.into_iter().partition(|held| {
            let entry = &held.entry;
            !answered
                || held.passes >= 1
                || backfill
                    .collected
                    .iter()
                    .any(|listed| listed.identifier == entry.identifier)
                || entry.server_time.is_none_or(|time| {
                    listed_newest.is_some_and(|newest| time < newest)
                        || missed.iter().any(|m| m.from <= time && time <= m.to)
                })
        });
        let covered: Vec<ConversationEntry> = covered.into_iter().map(|held| held.entry).collect();
        let waiting: Vec<HeldEntry> = waiting
            .into_iter()
            .map(|held| HeldEntry {
                passes: held.passes + 1,
                ..held
            })
            .collect();
        if !answered && !covered.is_empty() {
            record(
                out,
                Observation::HoldReleased {
                    entries: covered.len(),
                },
            );
        }
        // The listing's copy of an entry the stream also brought stands for both; only what
        // the stream never brought counts as backfilled.
        let mut merged: Vec<(ConversationEntry, Source)> = backfill
            .collected
            .into_iter()
            .map(|entry| {
                let streamed = covered
                    .iter()
                    .any(|held| held.identifier == entry.identifier);
                (
                    entry,
                    if streamed {
                        Source::Stream
                    } else {
                        Source::Backfill
                    },
                )
            })
            .collect();
        // The listing is in Salesforce's order, and so is the stream. An entry only the
        // stream brought goes before any listed entry of a later millisecond, and before the
        // next streamed entry the listing has; within its own millisecond its place is
        // unknown only where the listing reported a gap or did not answer.
        let position = |merged: &[(ConversationEntry, Source)], id: &EntryId| {
            merged
                .iter()
                .position(|(listed, _)| &listed.identifier == id)
        };
        let ids: Vec<EntryId> = covered.iter().map(|e| e.identifier.clone()).collect();
        for (index, entry) in covered.into_iter().enumerate() {
            if position(&merged, &entry.identifier).is_some() {
                continue;
            }
            let by_time = merged
                .iter()
                .position(|(listed, _)| order_key(listed) > order_key(&entry))
                .unwrap_or(merged.len());
            let at = ids[index + 1..]
                .iter()
                .find_map(|later| position(&merged, later))
                .map_or(by_time, |anchor| anchor.min(by_time));
            merged.insert(at, (entry, Source::Stream));
        }
        // A session end that the same listing shows was followed by a new messaging session
        // (the bridge resent a message as one after a 417, while the end was kept off the
        // stream) is over already: it ends nothing now.
        let mut superseded = vec![false; merged.len()];
        let mut restarted_later = false;
        for (index, (entry, _)) in merged.iter().enumerate().rev() {
            superseded[index] = restarted_later && ends_session(entry);
            restarted_later |= starts_session(entry);
        }
        let mut new_entries = 0;
        for ((entry, source), superseded) in merged.into_iter().zip(superseded) {
            if superseded {
                if self
                    .dedupe
                    .first_sighting(&entry.identifier, entry.server_time)
                {
                    record(
                        out,
                        Observation::Ignored {
                            what: "a session end followed by a new messaging session",
                        },
                    );
                }
                continue;
            }
            if self.on_entry(out, now, entry, source) && source == Source::Backfill {
                new_entries += 1;
            }
        }
        if new_entries > 0 {
            record(out, Observation::Backfilled { new_entries });
        }
        self.held = waiting;
        if backfill.last
            && self.phase == Phase::Ending
            && let Some(ending) = self.ending.take()
        {
            self.finish_end(out, now, ending.reason, ending.detail, false);
        }
        if self.held.is_empty() || self.phase == Phase::Ended {
            self.timers.clear(Timer::StreamHold);
            self.timers.clear(Timer::ListingRetry);
        } else if !self.request_backfill(out, now, false) {
            self.release_stream_hold(out, now);
        }
    }

    // ---- the stream hold --------------------------------------------------------------------

    /// An entry from the stream. Entries that change what the user or the Flow sees wait for
    /// a listing that shows whether Salesforce withheld anything before them from the stream,
    /// and are then relayed in server order with what the listing found (bounded by
    /// [`SessionConfig::stream_hold`](crate::SessionConfig::stream_hold)).
    pub(super) fn on_stream_entry(
        &mut self,
        out: &mut Vec<Command>,
        now: Timestamp,
        entry: ConversationEntry,
    ) {
        let hold = !self.config.stream_hold.is_zero()
            && self.phase != Phase::Ended
            && entry.conversation_id == self.request.conversation_id
            && is_ordered(&entry);
        if !hold {
            self.on_entry(out, now, entry, Source::Stream);
            return;
        }
        if self.dedupe.has_seen(&entry.identifier, entry.server_time)
            || self
                .held
                .iter()
                .any(|held| held.entry.identifier == entry.identifier)
        {
            record(out, Observation::DuplicateEntry);
            return;
        }
        // Behind entries already waiting it waits too, listing or not: it must not pass them.
        if !self.request_backfill(out, now, false) && self.held.is_empty() {
            // No listing can be had now (no usable token): relay as it comes.
            record(out, Observation::HoldReleased { entries: 1 });
            self.on_entry(out, now, entry, Source::Stream);
            return;
        }
        if self.held.is_empty() {
            self.timers
                .set(Timer::StreamHold, now + self.config.stream_hold);
        }
        self.held.push(HeldEntry { entry, passes: 0 });
    }

    /// The hold bound passed (or no listing can be had): relay the held entries as they are,
    /// in server order. What the listing under way brings later comes late.
    pub(super) fn release_stream_hold(&mut self, out: &mut Vec<Command>, now: Timestamp) {
        self.timers.clear(Timer::StreamHold);
        self.timers.clear(Timer::ListingRetry);
        let mut held = std::mem::take(&mut self.held);
        if held.is_empty() {
            return;
        }
        record(
            out,
            Observation::HoldReleased {
                entries: held.len(),
            },
        );
        held.sort_by_key(|held| (held.entry.server_time.is_none(), held.entry.server_time));
        for held in held {
            self.on_entry(out, now, held.entry, Source::Stream);
        }
    }

    // ---- entries ----------------------------------------------------------------------------

    /// Processes one entry from any source. Returns whether it was new.
    pub(super) fn on_entry(
        &mut self,
        out: &mut Vec<Command>,
        now: Timestamp,
        entry: ConversationEntry,
        source: Source,
    ) -> bool {
        if entry.conversation_id != self.request.conversation_id {
            record(out, Observation::ForeignConversation);
            return false;
        }
        if self.phase == Phase::Ended {
            record(out, Observation::IgnoredAfterEnd);
            return false;
        }
        if !self
            .dedupe
            .first_sighting(&entry.identifier, entry.server_time)
        {
            // A backfill lists recent entries, most of them already seen; only a repeat on the
            // stream is a duplicate worth counting.
            if source == Source::Stream {
                record(out, Observation::DuplicateEntry);
            }
            return false;
        }
        let ConversationEntry {
            identifier,
            sender,
            payload,
            message_id,
            ..
        } = entry;
        if sender.role == Role::EndUser && matches!(payload, EntryPayload::Message(_)) {
            // Salesforce's echo of what the bridge sent; never relayed back.
            self.on_own_echo(out, &identifier, message_id.as_ref());
            return true;
        }
        if self.phase == Phase::Ending {
            // Only messages still matter: they are what the final backfill is for. And when
            // the end was a guess (the conversation vanished), Salesforce's own end wins.
            match payload {
                EntryPayload::Message(content) => {
                    self.on_message(out, now, identifier, sender, content);
                }
                EntryPayload::CloseConversation => self.explain_ending(EndReason::UserClosed),
                EntryPayload::SessionStatusChanged {
                    status: SessionStatus::Ended,
                    ended_by,
                } => self.explain_ending(if ended_by == Some(Role::EndUser) {
                    EndReason::UserClosed
                } else {
                    EndReason::AgentEnded
                }),
                // Only the messages and the end matter now.
                EntryPayload::SessionStatusChanged { .. }
                | EntryPayload::ParticipantChanged(_)
                | EntryPayload::RoutingResult(_)
                | EntryPayload::TypingStarted
                | EntryPayload::TypingStopped
                | EntryPayload::DeliveryAcknowledged { .. }
                | EntryPayload::ReadAcknowledged { .. }
                | EntryPayload::QueuePosition { .. }
                | EntryPayload::ProgressIndicator { .. }
                | EntryPayload::Unknown { .. } => {}
            }
            return true;
        }
        match payload {
            EntryPayload::Message(content) => {
                self.on_message(out, now, identifier, sender, content)
            }
            EntryPayload::ParticipantChanged(changes) => {
                for change in changes {
                    self.on_participant(out, now, change);
                }
            }
            EntryPayload::RoutingResult(result) => self.on_routing_result(out, now, result),
            EntryPayload::SessionStatusChanged { status, ended_by } => {
                self.on_session_status(out, now, status, ended_by);
            }
            EntryPayload::CloseConversation => {
                self.end(out, now, EndReason::UserClosed, None, false);
            }
            EntryPayload::TypingStarted | EntryPayload::ProgressIndicator { .. } => {
                self.relay_typing(out, &sender, true);
            }
            EntryPayload::TypingStopped => self.relay_typing(out, &sender, false),
            EntryPayload::DeliveryAcknowledged { acknowledged } => {
                let message = self.acknowledged_message(acknowledged.as_ref());
                let event = ProviderEvent::Delivered {
                    entry: acknowledged,
                    message,
                };
                self.forward(out, now, event);
            }
            EntryPayload::ReadAcknowledged { acknowledged } => {
                let message = self.acknowledged_message(acknowledged.as_ref());
                let event = ProviderEvent::Read {
                    entry: acknowledged,
                    message,
                };
                self.forward(out, now, event);
            }
            EntryPayload::QueuePosition { position } => {
                self.queue_update(out, now, Some(position), None);
            }
            EntryPayload::Unknown { entry_type } => {
                record(out, Observation::UnknownEntryType { entry_type });
            }
        }
        true
    }

    fn explain_ending(&mut self, reason: EndReason) {
        if let Some(ending) = &mut self.ending
            && ending.reason == EndReason::ProviderError
        {
            ending.reason = reason;
            ending.detail = None;
        }
    }

    fn on_message(
        &mut self,
        out: &mut Vec<Command>,
        now: Timestamp,
        identifier: EntryId,
        sender: Sender,
        content: MessageContent,
    ) {
        if !sender.role.is_relayed() {
            record(
                out,
                Observation::Ignored {
                    what: "message from a role that is not relayed",
                },
            );
            return;
        }
        if content.is_empty() {
            record(out, Observation::EmptyAgentMessage);
            return;
        }
        let message = AgentMessage {
            entry: identifier.clone(),
            role: sender.role,
            sender_name: sender.display_name,
            content,
        };
        let delivery = BotDelivery::Notify(Notification::Agent(message));
        self.enqueue_bot(out, now, delivery, Some(identifier));
    }

    /// A customer message from Salesforce: the bridge's own, recognised by the entry's
    /// identifier or (when Salesforce gave the entry one of its own) by `abstractMessage.id`;
    /// the identifier then joins the ids receipts can name. A customer message the bridge
    /// did not send (another device of a verified user) is not relayed either.
    fn on_own_echo(
        &mut self,
        out: &mut Vec<Command>,
        identifier: &EntryId,
        message_id: Option<&EntryId>,
    ) {
        if self.sent_message(identifier).is_some() {
            record(
                out,
                Observation::OwnEcho {
                    by: EchoMatch::Identifier,
                },
            );
        } else if let Some(message) = message_id.and_then(|id| self.sent_message(id)).cloned() {
            self.remember_sent(identifier.as_str(), &message);
            record(
                out,
                Observation::OwnEcho {
                    by: EchoMatch::MessageId,
                },
            );
        }
    }

    /// The Flow's id of the user's message a receipt names, if the bridge sent it recently.
    fn acknowledged_message(&self, acknowledged: Option<&EntryId>) -> Option<BotMessageId> {
        acknowledged
            .and_then(|entry| self.sent_message(entry))
            .cloned()
    }

    fn relay_typing(&mut self, out: &mut Vec<Command>, sender: &Sender, on: bool) {
        if sender.role.is_relayed() {
            self.call_bot(out, Pending::BotTyping, BotDelivery::Typing { on });
        }
    }

    // ---- participants and routing -----------------------------------------------------------

    fn on_participant(
        &mut self,
        out: &mut Vec<Command>,
        now: Timestamp,
        change: ParticipantChange,
    ) {
        if change.role != Role::EndUser {
            self.forward(
                out,
                now,
                ProviderEvent::Participant {
                    operation: change.operation.clone(),
                    role: change.role.clone(),
                    name: change.display_name.clone(),
                },
            );
        }
        if change.role != Role::Agent {
            return;
        }
        let key = change
            .subject
            .clone()
            .or_else(|| change.display_name.clone())
            .unwrap_or_else(|| "agent".to_owned());
        match change.operation {
            ParticipantOperation::Add => self.agent_joined(out, now, key, change.display_name),
            ParticipantOperation::Remove => self.agent_removed(out, now, &key),
            ParticipantOperation::Update | ParticipantOperation::Unknown(_) => {}
        }
    }

    fn agent_joined(
        &mut self,
        out: &mut Vec<Command>,
        now: Timestamp,
        key: String,
        name: Option<String>,
    ) {
        let was_alone = self.agents.present.is_empty();
        self.agents.present.insert(key, name.clone());
        self.agents.removal_check = None;
        if !was_alone {
            return;
        }
        let previous = std::mem::replace(&mut self.agents.last_name, name.clone());
        self.agents.ever_joined = true;
        self.agents.transfer_seen = false;
        self.phase = Phase::WithAgent;
        // The shorter safety poll starts now, not after the long one.
        let poll = now + self.safety_poll_interval();
        if self
            .timers
            .get(Timer::SafetyPoll)
            .is_some_and(|due| due > poll)
        {
            self.timers.set(Timer::SafetyPoll, poll);
        }
        self.release_held(out, now);
        if !self.agents.flow_active {
            self.agents.flow_active = true;
            self.inject(out, now, HandoverStatus::Active { agent_name: name });
        } else if self.request.settings.agent_change_notification && name != previous {
            let agent = name.as_deref().unwrap_or("another agent");
            let text = self.config.agent_change_text.replace("{agent}", agent);
            self.status_seq += 1;
            let key = format!("{}/notice/{}", self.request.handover_id, self.status_seq);
            let delivery = BotDelivery::Notify(Notification::Notice { key, text });
            self.enqueue_bot(out, now, delivery, None);
        }
    }

    fn agent_removed(&mut self, out: &mut Vec<Command>, now: Timestamp, key: &str) {
        if self.agents.present.remove(key).is_none() && self.agents.present.len() == 1 {
            // The removal names the agent differently from the join; there was only one.
            self.agents.present.clear();
        }
        if !self.agents.present.is_empty() || self.phase != Phase::WithAgent {
            return;
        }
        if self.agents.transfer_seen {
            self.phase = Phase::Transferring;
            return;
        }
        // A transfer also removes the agent. Only the routing status tells the two apart.
        self.phase = Phase::AgentLeft;
        match self.credential(now) {
            Some(credential) => {
                let request = SalesforceRequest::FetchRoutingStatus {
                    conversation_id: self.request.conversation_id,
                };
                let call =
                    self.call_salesforce(out, Pending::RoutingStatus, Some(credential), request);
                self.agents.removal_check = Some(call);
            }
            // Unknown: staying open is the safe choice.
            None => self.agents.flow_active = false,
        }
    }

    fn on_routing_status(
        &mut self,
        out: &mut Vec<Command>,
        now: Timestamp,
        call: CallId,
        result: Result<SalesforceResponse, CallFailure>,
    ) {
        if self.agents.removal_check != Some(call) {
            return;
        }
        self.agents.removal_check = None;
        if !self.phase.is_live() || !self.agents.present.is_empty() {
            return;
        }
        match result {
            Ok(SalesforceResponse::RoutingStatus(
                RoutingStatus::Transfer | RoutingStatus::Routed | RoutingStatus::Initial,
            )) => self.phase = Phase::Transferring,
            Ok(SalesforceResponse::RoutingStatus(RoutingStatus::NeedsRouting)) => {
                if self.agents.transfer_seen {
                    self.phase = Phase::Transferring;
                } else if self.config.ends_when_agent_leaves(&self.request.settings) {
                    self.end(out, now, EndReason::AgentLeft, None, true);
                } else {
                    self.agents.flow_active = false;
                }
            }
            Err(CallFailure::Unauthorized) => {
                self.agents.flow_active = false;
                self.on_unauthorized(out, now);
            }
            // An unknown status: never end on a guess.
            Ok(_) | Err(_) => self.agents.flow_active = false,
        }
    }

    fn on_routing_result(&mut self, out: &mut Vec<Command>, now: Timestamp, result: RoutingResult) {
        self.forward(
            out,
            now,
            ProviderEvent::Routing {
                routing_type: result.routing_type.clone(),
                failure: result.failure.clone(),
            },
        );
        if let Some(failure) = result.failure {
            if result.routing_type == RoutingType::Initial {
                let detail = failure.reason.unwrap_or(failure.kind);
                self.end(out, now, EndReason::RoutingFailed, Some(detail), true);
            }
            // A failed transfer leaves the conversation where it was.
            return;
        }
        if result.routing_type == RoutingType::Transfer {
            self.agents.transfer_seen = true;
            if self.agents.present.is_empty() && self.phase == Phase::AgentLeft {
                self.phase = Phase::Transferring;
            }
        }
        if let Some(wait) = result.estimated_wait {
            self.queue_update(out, now, None, Some(wait));
        }
    }

    fn on_session_status(
        &mut self,
        out: &mut Vec<Command>,
        now: Timestamp,
        status: SessionStatus,
        ended_by: Option<Role>,
    ) {
        match status {
            SessionStatus::Ended => {
                let reason = if ended_by == Some(Role::EndUser) {
                    EndReason::UserClosed
                } else {
                    EndReason::AgentEnded
                };
                self.end(out, now, reason, None, false);
            }
            SessionStatus::Inactive => {
                self.forward(out, now, ProviderEvent::SessionStatus(status));
                self.phase = Phase::Inactive;
                self.agents.present.clear();
                self.agents.removal_check = None;
                self.agents.flow_active = false;
                if self.user_typing {
                    self.stop_typing(out, now);
                }
            }
            SessionStatus::Waiting => {
                self.forward(out, now, ProviderEvent::SessionStatus(status));
                if matches!(self.phase, Phase::Inactive | Phase::AgentLeft) {
                    self.phase = Phase::Queued;
                }
            }
            SessionStatus::New | SessionStatus::Active | SessionStatus::Other(_) => {
                self.forward(out, now, ProviderEvent::SessionStatus(status));
            }
        }
    }

    /// A queue position or wait estimate arrived; tell the Flow if the handover asks for it
    /// and something changed.
    fn queue_update(
        &mut self,
        out: &mut Vec<Command>,
        now: Timestamp,
        position: Option<u32>,
        wait: Option<Duration>,
    ) {
        if position.is_some() {
            self.queue.position = position;
        }
        if wait.is_some() {
            self.queue.wait = wait;
        }
        let settings = &self.request.settings.queue;
        if !matches!(
            self.phase,
            Phase::OpeningStream
                | Phase::CreatingConversation
                | Phase::Queued
                | Phase::Transferring
        ) {
            return;
        }
        let position = self.queue.position.filter(|_| settings.position);
        let wait = self.queue.wait.filter(|_| settings.estimated_wait_time);
        if position.is_none() && wait.is_none() {
            return;
        }
        let over = settings.alternative.as_ref().filter(|alternative| {
            position
                .zip(alternative.max_position)
                .is_some_and(|(p, max)| p > max)
                || wait
                    .zip(alternative.max_wait)
                    .is_some_and(|(w, max)| w > max)
        });
        let update = match over {
            Some(alternative) => QueueUpdate {
                position: None,
                estimated_wait: None,
                alternative_text: Some(alternative.text.clone()),
            },
            None => QueueUpdate {
                position,
                estimated_wait: wait,
                alternative_text: None,
            },
        };
        if self.queue.last_sent.as_ref() == Some(&update) {
            return;
        }
        self.queue.last_sent = Some(update.clone());
        self.inject(out, now, HandoverStatus::Queue(update));
    }
}
