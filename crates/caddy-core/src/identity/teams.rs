//! Teams with nested membership: a team contains users and other teams, and
//! roles granted to a team apply to everyone in it, directly or through
//! sub-teams. The membership graph is kept acyclic.
//!
//! [`TeamGraph`] knows nothing about which users exist: the wiring checks a
//! user id before adding it and calls [`TeamGraph::remove_user`] when a user
//! is deleted or erased.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::ids::{RoleName, TeamId, UserId};
use super::validate::team_name;
use crate::{CaddyError, ErrorCode};

/// Most teams per tenant.
pub const MAX_TEAMS: usize = 1024;
/// Most direct members of one team.
pub const MAX_TEAM_MEMBERS: usize = 10_000;

/// A direct member of a team.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Member {
    /// A user.
    User(UserId),
    /// A nested team: its members are members of the containing team.
    Team(TeamId),
}

/// A team of one tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Team {
    /// Id.
    pub id: TeamId,
    /// Name, unique within the tenant.
    pub name: String,
    /// Direct members.
    pub members: BTreeSet<Member>,
    /// Roles granted to the team (and so to every transitive member).
    pub roles: BTreeSet<RoleName>,
    /// Stamped creation time.
    pub created_ms: u64,
}

/// All teams of one tenant.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TeamGraph {
    teams: BTreeMap<TeamId, Team>,
}

fn not_found(id: TeamId) -> CaddyError {
    CaddyError::new(ErrorCode::NotFound, format!("no team {id} in this tenant"))
}

impl TeamGraph {
    /// No teams.
    pub fn new() -> Self {
        Self::default()
    }

    /// A team by id.
    pub fn get(&self, id: TeamId) -> Option<&Team> {
        self.teams.get(&id)
    }

    /// Teams in id order.
    pub fn teams(&self) -> impl Iterator<Item = &Team> {
        self.teams.values()
    }

    fn get_mut(&mut self, id: TeamId) -> Result<&mut Team, CaddyError> {
        self.teams.get_mut(&id).ok_or_else(|| not_found(id))
    }

    /// Creates an empty team. Refused: an existing id or name (AlreadyExists),
    /// an invalid name, more than [`MAX_TEAMS`] teams.
    pub fn create(&mut self, id: TeamId, name: &str, created_ms: u64) -> Result<&Team, CaddyError> {
        let name = team_name(name)?;
        if self.teams.contains_key(&id) {
            return Err(CaddyError::new(ErrorCode::AlreadyExists, format!("team {id} already exists")));
        }
        if self.teams.values().any(|t| t.name == name) {
            return Err(CaddyError::new(ErrorCode::AlreadyExists, format!("a team named {name:?} already exists")));
        }
        if self.teams.len() >= MAX_TEAMS {
            return Err(CaddyError::exhausted(format!("this tenant already has {MAX_TEAMS} teams (the limit)")));
        }
        let team = Team { id, name, members: BTreeSet::new(), roles: BTreeSet::new(), created_ms };
        Ok(self.teams.entry(id).or_insert(team))
    }

    /// Deletes a team and removes it from every team that contained it.
    pub fn delete(&mut self, id: TeamId) -> Result<Team, CaddyError> {
        let team = self.teams.remove(&id).ok_or_else(|| not_found(id))?;
        for t in self.teams.values_mut() {
            t.members.remove(&Member::Team(id));
        }
        Ok(team)
    }

    /// Adds `member` to `team`; returns false if it already was a direct
    /// member. Refused: unknown teams (NotFound), a team containing itself or
    /// an ancestor (FailedPrecondition naming the cycle), a full team.
    pub fn add_member(&mut self, team: TeamId, member: Member) -> Result<bool, CaddyError> {
        let members = &self.teams.get(&team).ok_or_else(|| not_found(team))?.members;
        if members.contains(&member) {
            return Ok(false);
        }
        if members.len() >= MAX_TEAM_MEMBERS {
            return Err(CaddyError::exhausted(format!(
                "team {team} already has {MAX_TEAM_MEMBERS} members (the limit)"
            )));
        }
        if let Member::Team(child) = member {
            if !self.teams.contains_key(&child) {
                return Err(not_found(child));
            }
            // Adding child under team closes a cycle iff team is reachable from child.
            if let Some(path) = self.path(child, team) {
                let names: Vec<String> = std::iter::once(team).chain(path).map(|t| t.to_string()).collect();
                return Err(CaddyError::precondition(format!(
                    "team membership cycle: {}; a team cannot contain itself",
                    names.join(" contains ")
                )));
            }
        }
        self.get_mut(team)?.members.insert(member);
        Ok(true)
    }

    /// Removes a direct member (NotFound if it was not one).
    pub fn remove_member(&mut self, team: TeamId, member: Member) -> Result<(), CaddyError> {
        if self.get_mut(team)?.members.remove(&member) {
            Ok(())
        } else {
            Err(CaddyError::new(ErrorCode::NotFound, format!("{member:?} is not a direct member of team {team}")))
        }
    }

    /// Removes `user` from every team (user deleted or erased).
    pub fn remove_user(&mut self, user: UserId) {
        for t in self.teams.values_mut() {
            t.members.remove(&Member::User(user));
        }
    }

    /// Grants a role to a team (the caller checks the role exists and that
    /// the granter holds it); returns false if already granted.
    pub fn grant_role(&mut self, team: TeamId, role: RoleName) -> Result<bool, CaddyError> {
        Ok(self.get_mut(team)?.roles.insert(role))
    }

    /// Revokes a role from a team (NotFound if it was not granted).
    pub fn revoke_role(&mut self, team: TeamId, role: &RoleName) -> Result<(), CaddyError> {
        if self.get_mut(team)?.roles.remove(role) {
            Ok(())
        } else {
            Err(CaddyError::new(ErrorCode::NotFound, format!("team {team} does not have role {role}")))
        }
    }

    /// Path of nested teams from `from` down to `to` (inclusive), if any.
    fn path(&self, from: TeamId, to: TeamId) -> Option<Vec<TeamId>> {
        let mut visited = BTreeSet::new();
        let mut stack = vec![vec![from]];
        while let Some(path) = stack.pop() {
            let at = *path.last()?;
            if at == to {
                return Some(path);
            }
            if !visited.insert(at) {
                continue;
            }
            if let Some(t) = self.teams.get(&at) {
                for m in t.members.iter().rev() {
                    if let Member::Team(next) = m {
                        let mut p = path.clone();
                        p.push(*next);
                        stack.push(p);
                    }
                }
            }
        }
        None
    }

    /// Every team `user` belongs to, directly or through nested teams.
    pub fn effective_teams(&self, user: UserId) -> BTreeSet<TeamId> {
        let mut out = BTreeSet::new();
        let mut frontier: Vec<Member> = vec![Member::User(user)];
        while let Some(m) = frontier.pop() {
            for t in self.teams.values().filter(|t| t.members.contains(&m)) {
                if out.insert(t.id) {
                    frontier.push(Member::Team(t.id));
                }
            }
        }
        out
    }

    /// `direct` plus every role granted to a team `user` belongs to.
    pub fn roles_for_user(&self, user: UserId, direct: &BTreeSet<RoleName>) -> BTreeSet<RoleName> {
        let mut roles = direct.clone();
        for id in self.effective_teams(user) {
            if let Some(t) = self.teams.get(&id) {
                roles.extend(t.roles.iter().cloned());
            }
        }
        roles
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(n: u64) -> TeamGraph {
        let mut g = TeamGraph::new();
        for i in 1..=n {
            g.create(TeamId(i), &format!("team {i}"), 0).unwrap();
        }
        g
    }

    #[test]
    fn nested_membership_is_transitive() {
        let mut g = graph(4);
        // 1 contains 2 contains 3; user 7 is in 3; 4 is unrelated.
        assert!(g.add_member(TeamId(1), Member::Team(TeamId(2))).unwrap());
        g.add_member(TeamId(2), Member::Team(TeamId(3))).unwrap();
        g.add_member(TeamId(3), Member::User(UserId(7))).unwrap();
        assert!(!g.add_member(TeamId(3), Member::User(UserId(7))).unwrap());
        g.add_member(TeamId(4), Member::User(UserId(8))).unwrap();
        assert_eq!(g.effective_teams(UserId(7)), [TeamId(1), TeamId(2), TeamId(3)].into());
        assert_eq!(g.effective_teams(UserId(9)), BTreeSet::new());
        let ops = RoleName::new("ops").unwrap();
        g.grant_role(TeamId(1), ops.clone()).unwrap();
        let direct = [RoleName::new("viewer").unwrap()].into();
        assert!(g.roles_for_user(UserId(7), &direct).contains(&ops));
        assert!(!g.roles_for_user(UserId(8), &direct).contains(&ops));
        // Diamonds are fine: 4 also contains 3.
        g.add_member(TeamId(4), Member::Team(TeamId(3))).unwrap();
        assert_eq!(g.effective_teams(UserId(7)).len(), 4);
        g.delete(TeamId(2)).unwrap();
        assert_eq!(g.effective_teams(UserId(7)), [TeamId(3), TeamId(4)].into());
        g.remove_user(UserId(7));
        assert!(g.effective_teams(UserId(7)).is_empty());
        g.revoke_role(TeamId(1), &ops).unwrap();
        assert_eq!(g.revoke_role(TeamId(1), &ops).unwrap_err().code, ErrorCode::NotFound);
    }

    #[test]
    fn cycles_are_rejected_and_named() {
        let mut g = graph(3);
        g.add_member(TeamId(1), Member::Team(TeamId(2))).unwrap();
        g.add_member(TeamId(2), Member::Team(TeamId(3))).unwrap();
        let before = g.clone();
        let err = g.add_member(TeamId(3), Member::Team(TeamId(1))).unwrap_err();
        assert_eq!(err.code, ErrorCode::FailedPrecondition);
        assert!(err.message.contains("team-3 contains team-1 contains team-2 contains team-3"), "{}", err.message);
        let err = g.add_member(TeamId(2), Member::Team(TeamId(2))).unwrap_err();
        assert_eq!(err.code, ErrorCode::FailedPrecondition);
        assert_eq!(g, before);
    }

    #[test]
    fn bad_input_is_typed() {
        let mut g = graph(1);
        assert_eq!(g.create(TeamId(1), "other", 0).unwrap_err().code, ErrorCode::AlreadyExists);
        assert_eq!(g.create(TeamId(2), "team 1", 0).unwrap_err().code, ErrorCode::AlreadyExists);
        assert_eq!(g.create(TeamId(2), " ", 0).unwrap_err().code, ErrorCode::InvalidArgument);
        assert_eq!(g.add_member(TeamId(9), Member::User(UserId(1))).unwrap_err().code, ErrorCode::NotFound);
        assert_eq!(g.add_member(TeamId(1), Member::Team(TeamId(9))).unwrap_err().code, ErrorCode::NotFound);
        assert_eq!(g.remove_member(TeamId(1), Member::User(UserId(1))).unwrap_err().code, ErrorCode::NotFound);
        assert_eq!(g.delete(TeamId(9)).unwrap_err().code, ErrorCode::NotFound);
    }
}
